//! The daemon: the accept loop, turning handoffs into streams (or 400/503
//! answers), and the drain on shutdown: the socket path goes first, every
//! handoff already queued is answered 503, then running streams finish until
//! the drain deadline. A socket inherited from the service manager keeps its
//! path and its queue for the next daemon (core's `SocketOrigin`).

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::{Duration, Instant};

use handoff_core::config::{Backend, Config, SocketOrigin, SocketType};
use handoff_core::guard::{self as decide, AcceptStep, FdGuard, LogLimit, OncePerKind, PeerPolicy};
use handoff_core::http1;
use handoff_core::limits::{Limits, Snapshot};
use handoff_core::liveness::Liveness;
use handoff_core::metrics::{FdEvent, Metrics, Rejection, WorkerMetrics};
use handoff_core::mock;
use handoff_core::pool::StreamId;
use handoff_core::stream::close::Closing;
use handoff_core::stream::{Source, Stream, StreamConfig};
use handoff_core::user_limits::{BackendLimit, UserLimits};
use handoff_core::{admission, handoff};

use crate::activation::ActivationError;
use crate::backend::{BackendSetupError, BackendStream, OpenAiBackend};
use crate::client::{ClientIo, ClientSocket, FdClient};
use crate::guard::{self, Reserve};
use crate::listener::{self, BindError, Received};
use crate::notify::{self, Notifier};
use crate::runtime::{with_deadline, ReadyFd, Runtime, Timer};
use crate::stop::StopSignal;
use crate::{driver, sys};

/// What every worker shares: admission, counters and the drain flag. Touched
/// once per handoff or per stream (an atomic each), never per event.
pub struct Global {
    pub limits: Arc<Limits>,
    /// Every user's running streams, for `--max-streams-per-user` and the
    /// backends' `max_streams_per_user`: a Mutex-protected map shared by all
    /// workers, locked once when a stream is admitted and once when it ends,
    /// never per event (core's `user_limits` says why that is acceptable).
    pub user_limits: Arc<UserLimits>,
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
    /// The kinds of non-stream fds already logged (each once per process).
    kinds_logged: OncePerKind,
    /// Until when (milliseconds since `started`) every accept checks for room
    /// for the client fd: set whenever any worker meets a full fd table.
    watch_fds_until: AtomicU64,
    /// While watching, one worker at a time takes fds for handoffs (accept,
    /// the room check, the receive, the reserve): otherwise a slot one worker
    /// found free is taken by another before its receive, and a client fd is
    /// lost. A flag tried, never waited on: a worker that finds it taken tries
    /// again after a moment.
    fd_turn: AtomicBool,
    /// The latest configuration a SIGHUP reload accepted, for the workers.
    pub(crate) published: crate::reload::Published,
    /// Where completion records go, set once at bind (unset: records are off).
    records: std::sync::OnceLock<crate::records::Sink>,
    /// The daemon's start on the wall clock (Unix ms): part of the request ids
    /// it makes for records.
    boot_unix_ms: u64,
}

/// Wall-clock milliseconds since the Unix epoch (0 before it: a broken clock).
pub(crate) fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// Holds [`Global`]'s fd turn until dropped.
struct FdTurn<'a>(&'a AtomicBool);

impl Drop for FdTurn<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Global {
    pub fn new(limits: Arc<Limits>) -> Arc<Global> {
        Arc::new(Global {
            limits,
            user_limits: UserLimits::new(0),
            draining: AtomicBool::new(false),
            unlinked: AtomicBool::new(false),
            handoffs: AtomicU64::new(0),
            open_sockets: AtomicU64::new(0),
            started: Instant::now(),
            beats: Mutex::new(Vec::new()),
            metrics: Metrics::new(),
            kinds_logged: OncePerKind::default(),
            watch_fds_until: AtomicU64::new(0),
            fd_turn: AtomicBool::new(false),
            published: crate::reload::Published::default(),
            records: std::sync::OnceLock::new(),
            boot_unix_ms: unix_millis(),
        })
    }

    /// Where completion records go (`None`: records are off).
    pub fn records(&self) -> Option<&crate::records::Sink> {
        self.records.get()
    }

    /// The fd turn when no other worker holds it.
    fn fd_turn(&self) -> Option<FdTurn<'_>> {
        (!self.fd_turn.swap(true, Ordering::Acquire)).then(|| FdTurn(&self.fd_turn))
    }

    /// While watching, the fd turn (`Err` when another worker has it); outside
    /// a shortage, no turn is needed.
    fn fd_turn_if_watching(&self, now: Instant) -> Result<Option<FdTurn<'_>>, ()> {
        if !self.watching_fds(now) {
            return Ok(None);
        }
        self.fd_turn().map(Some).ok_or(())
    }

    /// Time since the daemon started: what rate limits and watches count in.
    fn since_start(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// A full fd table was met: accepts check for room for `watch_for`.
    fn saw_fd_shortage(&self, now: Instant, watch_for: Duration) {
        let until = self.since_start(now).saturating_add(watch_for).as_millis();
        self.watch_fds_until.fetch_max(u64::try_from(until).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn watching_fds(&self, now: Instant) -> bool {
        let now = u64::try_from(self.since_start(now).as_millis()).unwrap_or(u64::MAX);
        now < self.watch_fds_until.load(Ordering::Relaxed)
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
    pub(crate) global: Arc<Global>,
    socket_type: SocketType,
    socket_origin: SocketOrigin,
    receive_timeout: Duration,
    retry_after_secs: u32,
    /// The backends new handoffs go to: replaced when a reload is published
    /// (locked once per handoff, on this worker's thread only, so uncontended;
    /// never per event). Streams keep the backend they started with.
    served: Mutex<Arc<Served<R>>>,
    /// The reload generation `served` was built for.
    served_generation: AtomicU64,
    /// Workers in this daemon: a reloaded pool's limits are divided by it.
    workers: usize,
    /// The attachment limits and `--data-dir`, opened, for the files handoffs name.
    attachments: crate::attachments::Attachments,
    /// Who may hand off (`--allow-uid` / `--allow-gid`).
    peers: PeerPolicy,
    fd_guard: FdGuard,
    /// One line a second, at most, for fd shortages and for refused peers.
    fd_log: LogLimit,
    peer_log: LogLimit,
    /// This worker's fds to release when the fd table is full.
    reserve: Reserve,
    /// Client sockets still open (streams closing after their outcome, error
    /// responses being written) and handoffs still being received: the worker
    /// exits only once these are done, so no answer is cut off.
    open_sockets: AtomicU64,
    /// Where each stream's completion record goes (`None`: none is built).
    pub(crate) records: Option<crate::records::Sink>,
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
    /// The backends for a handoff arriving now: rebuilt first when a reload was
    /// published since they were built (new pools on this worker's runtime; the
    /// old ones end once their streams have).
    fn served_now(&self) -> Arc<Served<R>> {
        let generation = self.global.published.generation();
        if generation != self.served_generation.load(Ordering::Relaxed) {
            self.served_generation.store(generation, Ordering::Relaxed);
            if let Some(config) = self.global.published.latest() {
                let mut config = (*config).clone();
                divide_pools(&mut config, self.workers);
                match Served::start(&self.runtime, &config, &self.metrics) {
                    Ok(served) => {
                        *self.served.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(served);
                        tracing::debug!(generation, "worker took the reloaded configuration");
                    }
                    Err(error) => {
                        tracing::error!(%error, "starting the reloaded backends failed; the old ones stay")
                    }
                }
            }
        }
        Arc::clone(&self.served.lock().unwrap_or_else(PoisonError::into_inner))
    }

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
            served: Mutex::new(Arc::new(Served {
                default: None,
                default_stream: StreamConfig::default(),
                named: Vec::new(),
            })),
            served_generation: AtomicU64::new(0),
            workers: 1,
            attachments: crate::attachments::Attachments::default(),
            peers: PeerPolicy::default(),
            fd_guard: FdGuard::default(),
            fd_log: LogLimit::new(FdGuard::default().log_interval),
            peer_log: LogLimit::new(FdGuard::default().log_interval),
            reserve: Reserve::open(0),
            open_sockets: AtomicU64::new(0),
            records: None,
        })
    }
}

/// The backends one worker serves new handoffs from.
struct Served<R: Runtime> {
    /// The flags' backend (`None`: the mock script) and its streams' settings.
    default: Option<OpenAiBackend<R>>,
    default_stream: StreamConfig,
    /// The config file's named backends, in its order (core's
    /// `backends::select` picks one by a handoff's `backend`).
    named: Vec<NamedServed<R>>,
}

impl<R: Runtime> Served<R> {
    /// Starts a pool for each backend of `config` (its limits already this
    /// worker's share) on this worker's runtime.
    fn start(runtime: &R, config: &Config, metrics: &Arc<WorkerMetrics>) -> Result<Served<R>, DaemonError> {
        let start = |backend: &Backend, pool: &handoff_core::pool::PoolConfig, name: &str| match backend {
            Backend::Mock => Ok(None),
            Backend::OpenAi(openai) => {
                OpenAiBackend::start_counted(runtime, openai, pool.clone(), Arc::clone(metrics))
                    .map(Some)
                    .map_err(|e| {
                        if name.is_empty() {
                            DaemonError::Backend(e)
                        } else {
                            DaemonError::Backend(BackendSetupError(format!("[backends.{name}]: {e}")))
                        }
                    })
            }
        };
        let default = start(&config.backend, &config.pool, "")?;
        let named = config
            .named_backends
            .iter()
            .map(|named| {
                let backend = start(&named.backend, &named.pool, &named.name)?;
                Ok(NamedServed {
                    name: named.name.clone(),
                    backend,
                    stream_config: named.stream.clone(),
                    max_streams_per_user: named.max_streams_per_user,
                })
            })
            .collect::<Result<Vec<_>, DaemonError>>()?;
        Ok(Served { default, default_stream: config.stream.clone(), named })
    }

    /// The backend core's `backends::select` chose (`None`: the default) and its
    /// streams' settings.
    fn get(&self, chosen: Option<usize>) -> (&Option<OpenAiBackend<R>>, &StreamConfig) {
        match chosen.and_then(|index| self.named.get(index)) {
            Some(named) => (&named.backend, &named.stream_config),
            None => (&self.default, &self.default_stream),
        }
    }

    fn shutdown(&self) {
        for backend in self.default.iter().chain(self.named.iter().filter_map(|named| named.backend.as_ref()))
        {
            backend.shutdown();
        }
    }
}

/// A named backend as one worker serves it.
struct NamedServed<R: Runtime> {
    name: String,
    /// `None`: the mock script.
    backend: Option<OpenAiBackend<R>>,
    /// Its streams' timeouts.
    stream_config: StreamConfig,
    /// Most streams one user may have on it at once (0: no limit of its own).
    max_streams_per_user: u32,
}

/// Each worker owns its connections, so each backend pool's limits are divided
/// among `count` workers, rounded up so each has at least one.
fn divide_pools(config: &mut Config, count: usize) {
    let count = count.max(1);
    let pools =
        std::iter::once(&mut config.pool).chain(config.named_backends.iter_mut().map(|n| &mut n.pool));
    for pool in pools {
        pool.max_connections = pool.max_connections.div_ceil(count);
        pool.max_connecting = pool.max_connecting.div_ceil(count);
        pool.max_queued = pool.max_queued.div_ceil(count);
    }
}

/// The bound socket and what the workers share; made once, before any worker.
pub struct Listening {
    config: Config,
    listener: OwnedFd,
    global: Arc<Global>,
    peers: PeerPolicy,
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
    peers: PeerPolicy,
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
        // Resolved before the socket exists: an unknown name touches nothing.
        let peers =
            guard::peer_policy(&config).map_err(|(flag, error)| DaemonError::Account { flag, error })?;
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
        global.user_limits.set_max_per_user(config.max_streams_per_user);
        global.user_limits.budget().configure(config.user_token_budget, config.user_token_window);
        if let Some(records) = &config.records {
            let sink = crate::records::Sink::start(records, Arc::clone(&global.metrics))
                .map_err(DaemonError::Records)?;
            tracing::info!(
                file = records.file.as_ref().map(|file| file.display().to_string()),
                webhook = records.webhook.as_ref().map(|webhook| format!(
                    "{}{}",
                    webhook.url.authority(),
                    webhook.url.path
                )),
                "completion records on"
            );
            let _ = global.records.set(sink);
        }
        tracing::info!(
            socket = %config.socket_path.display(),
            backend = if matches!(config.backend, Backend::Mock) { "mock" } else { "openai" },
            max_streams = config.max_streams,
            max_streams_per_user = config.max_streams_per_user,
            "listening"
        );
        for named in &config.named_backends {
            let (kind, url) = match &named.backend {
                Backend::Mock => ("mock", String::new()),
                Backend::OpenAi(openai) => {
                    ("openai", format!("{}{}", openai.base.authority(), openai.base.path))
                }
            };
            tracing::info!(backend = %named.name, kind, url, "named backend");
        }
        if !peers.is_open() {
            tracing::info!(
                allow_uid = ?config.allow_uids,
                allow_gid = ?config.allow_gids,
                "only these users and groups may hand off"
            );
        }
        Ok(Listening { config, listener, global, peers, notifier })
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
            peers: self.peers.clone(),
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
        divide_pools(&mut config, count);
        config.accept_balance.workers = count as u64;
        let notifier = if index == 0 { self.notifier.clone() } else { None };
        Ok(WorkerPlan {
            index,
            config,
            listener,
            global: Arc::clone(&self.global),
            peers: self.peers.clone(),
            role: Role::Handoffs,
            notifier,
        })
    }

    /// After every worker returned: the counters, or the first error (the
    /// socket file we bound is removed then, so no client waits on it).
    pub fn finish(&self, result: Result<(), DaemonError>) -> Result<Snapshot, DaemonError> {
        if let (Some(sink), Some(records)) = (self.global.records(), &self.config.records) {
            // Every stream has ended: what they recorded reaches the file and the spool.
            sink.shutdown(records.flush_timeout);
        }
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
    /// `--allow-uid` / `--allow-gid` names no account.
    /// The records file or spool could not be opened.
    Records(String),
    Account {
        flag: &'static str,
        error: crate::accounts::AccountError,
    },
    Io(&'static str, io::Error),
}

impl std::fmt::Display for DaemonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DaemonError::Bind(error) => write!(f, "{error}"),
            DaemonError::Activation(error) => write!(f, "{error}"),
            DaemonError::Backend(error) => write!(f, "{error}"),
            DaemonError::Account { flag, error } => write!(f, "{flag}: {error}"),
            DaemonError::Io(what, error) => write!(f, "{what}: {error}"),
            DaemonError::Records(error) => write!(f, "completion records: {error}"),
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
    let WorkerPlan { index, config, listener, global, peers, role, notifier } = plan;
    if let Role::Metrics(serving) = role {
        return crate::metrics::serve(runtime, listener, global, config, serving, shutdown).await;
    }
    let listener = runtime.register(listener).map_err(|e| DaemonError::Io("registering the listener", e))?;
    let metrics = global.metrics.register();
    let served = Served::start(&runtime, &config, &metrics)?;
    let attachments = crate::attachments::Attachments::open(&config.attachments)
        .map_err(|e| DaemonError::Io("opening --data-dir", e))?;
    let global_records = global.records().cloned();
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
        served: Mutex::new(Arc::new(served)),
        // A reload published before this worker started is taken at its first handoff.
        served_generation: AtomicU64::new(0),
        workers: usize::try_from(config.accept_balance.workers).unwrap_or(1).max(1),
        attachments,
        peers,
        fd_guard: config.fd_guard,
        fd_log: LogLimit::new(config.fd_guard.log_interval),
        peer_log: LogLimit::new(config.fd_guard.log_interval),
        reserve: Reserve::open(config.fd_guard.reserve_fds),
        open_sockets: AtomicU64::new(0),
        records: global_records,
    });
    if !shared.reserve.refill() {
        let held = shared.reserve.held();
        tracing::warn!(held, "opening the fd reserve failed; retried before each accept");
    }

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
    shared.served_now().shutdown();
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
                accept_handoff(shared, conn, false);
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
    // Held from an accept to the end of its handling, while fds are watched.
    let mut turn: Option<FdTurn<'_>> = None;
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
            // A reserve spent on an earlier shortage is made whole before the
            // next accept (no syscall while it is).
            let now = shared.runtime.now();
            match shared.global.fd_turn_if_watching(now) {
                Ok(taken) => turn = taken,
                Err(()) => {
                    // Another worker is taking fds: look again in a moment.
                    let mut timer = shared.runtime.timer(now + shared.fd_guard.room_wait);
                    let pending = timer.poll_expired(cx).is_pending();
                    backoff = Some(timer);
                    if pending {
                        return Poll::Pending;
                    }
                    backoff = None;
                }
            }
            restore_reserve(shared);
            let accepted = listener.poll_read_with(cx, || listener::accept(listener.as_fd()));
            if accepted.is_pending() {
                turn = None;
            }
            accepted.map(Some)
        })
        .await;
        let error = match accepted {
            None => return accepted_total,
            Some(Ok(conn)) => {
                accepted_total += 1;
                accept_handoff(shared, conn, false);
                turn = None;
                continue;
            }
            Some(Err(error)) => error,
        };
        let kind = guard::accept_error(&error);
        let now = shared.runtime.now();
        if kind == decide::AcceptError::OutOfFds {
            shared.metrics.record_fd_event(FdEvent::AcceptFailed);
            shared.global.saw_fd_shortage(now, shared.fd_guard.watch_for);
        }
        let step = match decide::after_accept_error(kind, shared.reserve.held(), config.accept_backoff) {
            AcceptStep::UseReserve => {
                // Taken here if not already: this handling allocates fds.
                let held = turn.take().or_else(|| shared.global.fd_turn());
                let taken = accept_with_reserve(shared, listener);
                drop(held);
                match taken {
                    Ok(()) => {
                        accepted_total += 1;
                        continue;
                    }
                    Err(()) => decide::after_reserve_accept_failed(config.accept_backoff),
                }
            }
            step => step,
        };
        turn = None;
        match step {
            AcceptStep::Pause(pause) => {
                if kind == decide::AcceptError::OutOfFds {
                    shared.metrics.record_fd_event(FdEvent::Paused);
                }
                if let Some(held_back) = shared.fd_log.check(shared.global.since_start(now)) {
                    tracing::warn!(%error, reserve = shared.reserve.held(), held_back, "accept failed; pausing accepts for {pause:?}");
                }
                backoff = Some(shared.runtime.timer(now + pause));
            }
            AcceptStep::Continue | AcceptStep::UseReserve => tracing::debug!(%error, "accept failed"),
        }
    }
}

/// Out of fds: closes the reserve and accepts once more, so that handoff's
/// client is answered 503 rather than left to time out in the queue. `Err`
/// when even that accept failed (or found nothing queued after all: the
/// failure was not ours to fix).
fn accept_with_reserve<R: Runtime>(shared: &Arc<Shared<R>>, listener: &R::Fd) -> Result<(), ()> {
    shared.reserve.release();
    shared.metrics.record_fd_event(FdEvent::ReserveUsed);
    let accepted = listener::accept(listener.as_fd());
    let result = match accepted {
        Ok(conn) => {
            accept_handoff(shared, conn, true);
            Ok(())
        }
        Err(_) => Err(()),
    };
    restore_reserve(shared);
    result
}

/// Re-opens what is missing of the reserve; counted when it cannot be.
fn restore_reserve<R: Runtime>(shared: &Arc<Shared<R>>) {
    if !shared.reserve.refill() {
        shared.metrics.record_fd_event(FdEvent::ReserveNotRestored);
    }
}

/// Checks who connected, then receives at once when the message is already
/// there (the usual case: the module sends right after connecting); otherwise
/// waits in a task of its own, so accepting never waits on any one
/// connection. `released`: the reserve was closed to accept this one, so its
/// client is answered 503; after a shortage a handoff with no room left for
/// its client fd releases the reserve too.
fn accept_handoff<R: Runtime>(shared: &Arc<Shared<R>>, conn: OwnedFd, released: bool) {
    if !peer_allowed(shared, &conn) {
        return;
    }
    let room = if released { Room::Released } else { make_room(shared, &conn) };
    let released = room == Room::Released;
    let mut partial = Received::default();
    let received = match room {
        // Left queued: the task below waits for room.
        Room::None => Err(io::Error::from(io::ErrorKind::WouldBlock)),
        Room::Free | Room::Released => listener::receive(conn.as_fd(), shared.socket_type, &mut partial),
    };
    match received {
        Ok(received) if released => answer_from_reserve(shared, received),
        Ok(received) => start_stream(shared, received),
        Err(error) if sys::would_block(&error) => {
            // Not there yet: it waits like any other (the room the reserve
            // made goes to it; the reserve is re-opened when it can be).
            let shared_for_task = shared.clone();
            shared.runtime.spawn(receive_later(shared_for_task, conn, partial));
            if released {
                restore_reserve(shared);
            }
            return;
        }
        Err(error) => {
            shared.metrics.record_rejected(Rejection::PeerRefused);
            tracing::warn!(%error, peer_pid = peer_pid(&conn), "receiving a handoff failed")
        }
    }
    if released {
        // The connection is closed first: its fd is one the reserve needs.
        drop(conn);
        restore_reserve(shared);
    }
}

/// Whether the client fd a module connection carries will find a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    /// A slot is free (or no shortage was seen lately: not checked).
    Free,
    /// The reserve was released to make one: the client is answered 503.
    Released,
    /// No slot and no reserve: receiving now would lose the fd.
    None,
}

/// The error a receive is held back with while there is no [`Room`].
#[derive(Debug)]
struct NoRoom;

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("no free fd for the client socket")
    }
}

impl std::error::Error for NoRoom {}

/// After a shortage, checks that the client fd `conn` carries will find a
/// free slot; when none is left, releases the reserve so it does.
fn make_room<R: Runtime>(shared: &Arc<Shared<R>>, conn: &impl AsFd) -> Room {
    if !shared.global.watching_fds(shared.runtime.now()) || guard::has_free_fd(conn.as_fd()) {
        return Room::Free;
    }
    shared.metrics.record_fd_event(FdEvent::NoRoomForClient);
    if shared.reserve.release() == 0 {
        return Room::None;
    }
    shared.metrics.record_fd_event(FdEvent::ReserveUsed);
    Room::Released
}

/// Whether the connecting process may hand off (`--allow-uid` / `--allow-gid`,
/// as core's [`PeerPolicy`] decides). A refused one is counted and logged
/// (pid, uid, gid; never its data, which is not read), then closed.
fn peer_allowed<R: Runtime>(shared: &Arc<Shared<R>>, conn: &OwnedFd) -> bool {
    if shared.peers.is_open() {
        return true;
    }
    let peer = guard::peer(conn.as_fd());
    if shared.peers.allows(peer) {
        return true;
    }
    shared.metrics.record_rejected(Rejection::PeerNotAllowed);
    // A flood of such connections logs a line a second, with the count held back.
    if let Some(held_back) = shared.peer_log.check(shared.global.since_start(shared.runtime.now())) {
        tracing::warn!(
            peer_pid = peer.map(|p| p.pid),
            peer_uid = peer.map(|p| p.uid),
            peer_gid = peer.map(|p| p.gid),
            held_back,
            "a process not allowed to hand off connected (--allow-uid / --allow-gid); closed unread"
        );
    }
    false
}

/// The connecting process, for the log of a module connection that went wrong.
fn peer_pid(conn: &impl AsFd) -> Option<i32> {
    rustix::net::sockopt::socket_peercred(conn).ok().map(|cred| cred.pid.as_raw_nonzero().get())
}

async fn receive_later<R: Runtime>(shared: Arc<Shared<R>>, conn: OwnedFd, mut partial: Received) {
    let _hold = shared.hold_socket();
    let conn = match shared.runtime.register(conn) {
        Ok(conn) => conn,
        Err(error) => {
            shared.metrics.record_rejected(Rejection::PeerRefused);
            return tracing::warn!(%error, "registering a handoff connection failed");
        }
    };
    let socket_type = shared.socket_type;
    let timeout = shared.receive_timeout;
    let deadline = shared.runtime.now() + timeout;
    // Room for the client fd is checked just before each receive: the table
    // may have filled while this waited. With no room and no reserve the
    // message is left queued (its fd stays in flight, not lost) and tried
    // again after a pause, until the receive deadline.
    let mut released = false;
    let mut waited_for_room = false;
    let received = loop {
        let receive = std::future::poll_fn(|cx| {
            conn.poll_read_with(cx, || {
                // Another worker taking fds now counts as no room: tried again.
                let Ok(_turn) = shared.global.fd_turn_if_watching(shared.runtime.now()) else {
                    return Err(io::Error::other(NoRoom));
                };
                match make_room(&shared, &conn) {
                    Room::None => Err(io::Error::other(NoRoom)),
                    room => {
                        released = released || room == Room::Released;
                        listener::receive(conn.as_fd(), socket_type, &mut partial)
                    }
                }
            })
        });
        match with_deadline(&shared.runtime, deadline, receive).await {
            Some(Err(error)) if error.get_ref().is_some_and(|inner| inner.is::<NoRoom>()) => {
                waited_for_room = true;
                let now = shared.runtime.now();
                if now >= deadline {
                    break None;
                }
                crate::runtime::sleep_until(&shared.runtime, (now + shared.fd_guard.room_wait).min(deadline))
                    .await;
                restore_reserve(&shared);
            }
            received => break received,
        }
    };
    if received.is_none() && waited_for_room {
        // The client fd never found a slot: dropped with the connection.
        shared.metrics.record_rejected(Rejection::FdDropped);
        return tracing::warn!(
            peer_pid = peer_pid(&conn),
            "out of file descriptors for {timeout:?}: a queued handoff was dropped unanswered"
        );
    }
    if !matches!(received, Some(Ok(_))) {
        shared.metrics.record_rejected(Rejection::PeerRefused);
    }
    match received {
        Some(Ok(received)) if released => answer_from_reserve(&shared, received),
        Some(Ok(received)) => start_stream(&shared, received),
        Some(Err(error)) => {
            tracing::warn!(%error, peer_pid = peer_pid(&conn), "receiving a handoff failed (waited for it)")
        }
        None => tracing::warn!(
            peer_pid = peer_pid(&conn),
            "a handoff connection sent nothing for {timeout:?}; dropped"
        ),
    }
    if released {
        // The connection is closed first: its fd is one the reserve needs.
        drop(conn);
        restore_reserve(&shared);
    }
}

/// The client socket a received handoff carries, when it has one that can be
/// served: a single fd (extra ones are closed), that is a stream socket. What
/// is refused is counted and logged here; nothing is written to it.
fn servable_client<R: Runtime>(shared: &Arc<Shared<R>>, received: &mut Received) -> Option<OwnedFd> {
    if received.control_truncated {
        if received.fds_received == 0 {
            // No fd installed: the kernel had no free slot and closed the
            // client's socket. Nobody can answer it; later accepts look first.
            let now = shared.runtime.now();
            shared.global.saw_fd_shortage(now, shared.fd_guard.watch_for);
            shared.metrics.record_rejected(Rejection::FdDropped);
            if let Some(held_back) = shared.fd_log.check(shared.global.since_start(now)) {
                tracing::warn!(
                    held_back,
                    "out of file descriptors: the kernel dropped a handed-off client socket; that client got no answer"
                );
            }
        } else {
            shared.metrics.record_rejected(Rejection::PeerRefused);
            tracing::warn!(
                fds = received.fds_received,
                "handoff control data was truncated; closed every fd"
            );
        }
        return None;
    }
    if received.fds_received > 1 {
        tracing::warn!(extra = received.fds_received - 1, "handoff carried extra fds; closed them");
    }
    let Some(client) = received.client.take() else {
        shared.metrics.record_rejected(Rejection::PeerRefused);
        tracing::warn!(bytes = received.data.len(), "handoff message carried no fd; dropped");
        return None;
    };
    let kind = guard::classify(client.as_fd());
    if !kind.is_served() {
        shared.metrics.record_rejected(Rejection::NotStreamSocket);
        if shared.global.kinds_logged.first(kind) {
            tracing::warn!(
                kind = kind.label(),
                "a handoff carried an fd that is not a stream socket; closed without writing (logged once per kind)"
            );
        }
        return None;
    }
    Some(client)
}

/// A handoff taken with the reserve: its client gets the 503 in one write and
/// the socket is closed at once, so the reserve can be re-opened (core's
/// [`decide::exhausted_response`]).
fn answer_from_reserve<R: Runtime>(shared: &Arc<Shared<R>>, mut received: Received) {
    let Some(client) = servable_client(shared, &mut received) else { return };
    let response = decide::exhausted_response(shared.retry_after_secs);
    let written = sys::set_nonblocking(client.as_fd()).and_then(|()| sys::write(client.as_fd(), &response));
    // What the client sent is read first, so the close is a FIN, not a reset
    // that could destroy the answer in flight.
    let _ = sys::discard_input(client.as_fd());
    drop(client);
    shared.metrics.record_rejected(Rejection::FdExhausted);
    let now = shared.runtime.now();
    if let Some(held_back) = shared.fd_log.check(shared.global.since_start(now)) {
        match written {
            Ok(bytes) if bytes == response.len() => tracing::warn!(
                held_back,
                "out of file descriptors: a handoff was answered 503 with the fd reserve"
            ),
            Ok(bytes) => tracing::warn!(
                held_back,
                bytes,
                "out of file descriptors: a handoff's 503 was cut short (the client's socket was full)"
            ),
            Err(error) => tracing::warn!(
                held_back,
                %error,
                "out of file descriptors: writing a handoff's 503 failed"
            ),
        }
    }
}

/// Turns a received handoff into a running stream, or answers it with an error.
fn start_stream<R: Runtime>(shared: &Arc<Shared<R>>, mut received: Received) {
    let Some(client) = servable_client(shared, &mut received) else { return };
    if let Err(error) = sys::set_nonblocking(client.as_fd()) {
        shared.metrics.record_rejected(Rejection::PeerRefused);
        return tracing::warn!(%error, "handed-off fd cannot be made non-blocking; closed");
    }
    sys::set_nodelay_best_effort(client.as_fd());
    sys::set_send_buffer_best_effort(client.as_fd(), shared.stream_config.client_send_buffer);

    let decoded = if received.truncated {
        Err(handoff::HandoffError::Truncated)
    } else {
        handoff::decode(&received.data)
    };
    // An unknown `backend` is a bad handoff like any other: refused before a slot.
    let mut chosen = None;
    let served = shared.served_now();
    let decoded = decoded.and_then(|handoff| {
        let names = served.named.iter().map(|named| named.name.as_str());
        chosen = handoff_core::backends::select(names, handoff.backend.as_deref())?;
        let config = served.get(chosen).0.as_ref().map(OpenAiBackend::config);
        handoff_core::backends::check_handoff(config, &handoff)?;
        Ok(handoff)
    });
    let draining =
        shared.global.draining.load(Ordering::Acquire) && shared.socket_origin.refuses_late_handoffs();
    // The chosen backend's own per-user limit (the default backend has none).
    let backend_limit = chosen
        .and_then(|index| served.named.get(index))
        .map(|named| BackendLimit { name: named.name.as_str(), max_per_user: named.max_streams_per_user });
    // The user's slot rides in the admission: held by the stream task until
    // its outcome, given back when the admission is dropped (on every path).
    let admitted = admission::admit_for_user(
        &shared.limits,
        &shared.global.user_limits,
        backend_limit,
        draining,
        decoded,
        unix_millis(),
    );
    let (mut handoff, admission) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => return refuse(shared, client, refusal),
    };
    // Files are read only for a handoff that got a slot.
    let used_files = match crate::attachments::load(&shared.attachments, &mut handoff) {
        Ok(used) => used.map(Box::new),
        Err(error) => return refuse(shared, client, admission::refuse_admitted(admission, error)),
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
    let (backend, stream_config) = served.get(chosen);
    let record = shared.records.is_some().then(|| {
        let name = chosen.and_then(|index| served.named.get(index)).map(|named| named.name.as_str());
        let default_model = backend.as_ref().map(|backend| backend.config().default_model.as_str());
        let meta = handoff_core::records::RecordMeta::for_handoff(
            &handoff,
            name,
            default_model,
            id,
            shared.global.boot_unix_ms,
            unix_millis(),
        );
        (Box::new(meta), handoff.record_text || stream_config.record_text)
    });
    // With a token budget, the stream's usage is spent against its user's at its end.
    let budget_user = handoff
        .user_id
        .as_deref()
        .filter(|_| shared.global.user_limits.budget().is_on())
        .map(Box::<str>::from);
    let (source, backend) = match backend {
        None => (Source::Mock(mock::Script::for_handoff(id, &handoff)), BackendStream::None),
        Some(backend) if backend.is_passthrough() => {
            (Source::Passthrough, backend.open_stream(StreamId(id), &handoff))
        }
        Some(backend) => (Source::Backend, backend.open_stream(StreamId(id), &handoff)),
    };
    drop(handoff);
    let mut machine = Stream::with_delivery(shared.runtime.now(), stream_config, head, source, delivery);
    let record = record.map(|(meta, keep_text)| {
        machine.record(keep_text, stream_config.record_text_max_bytes);
        meta
    });
    if record.is_none() && budget_user.is_some() {
        // The budget needs the usage only: no text is kept.
        machine.record(false, 0);
    }
    let task: driver::StreamTask<R> =
        driver::StreamTask::new(shared.clone(), id, fd, machine, backend, admission)
            .with_identity(identity)
            .with_used_files(used_files)
            .with_record(record)
            .with_budget_user(budget_user);
    shared.runtime.spawn(task);
}

fn refuse<R: Runtime>(shared: &Arc<Shared<R>>, client: OwnedFd, refusal: admission::Refusal) {
    shared.metrics.record_rejected(Rejection::of(&refusal));
    tracing::info!(%refusal, "handoff refused");
    respond(shared, client, refusal.response(shared.retry_after_secs));
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
