//! SIGHUP reloads the configuration: the flags, environment and config file are
//! read again and validated exactly as at start. A refused configuration is
//! logged (file, line and key) and counted, and the running one stays. An
//! accepted one is published here; each worker takes it at its next handoff,
//! starting new backend pools for it, while running streams finish on the pools
//! and timeouts they started with (core's [`handoff_core::reload`] says what
//! applies and what waits for a restart).
//!
//! One thread does the reading, woken by the signal handler through a socket
//! pair, so no worker ever reads a file or waits for one.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use handoff_core::config::Config;

use crate::daemon::Global;

/// How the configuration is read again: the same steps as at start.
pub type Reread = Box<dyn Fn() -> Result<Config, String> + Send + Sync>;

/// Set once by [`install`]: the reader of the signal's socket and the reread.
static INSTALLED: OnceLock<(Mutex<Option<UnixStream>>, Reread)> = OnceLock::new();

/// The latest accepted configuration, for the workers to take.
#[derive(Debug, Default)]
pub struct Published {
    /// Bumped for every accepted reload; a worker compares it with the one it
    /// last took (one relaxed load per handoff).
    generation: AtomicU64,
    config: Mutex<Option<Arc<Config>>>,
}

impl Published {
    /// The generation of the latest accepted configuration (0: the start's).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The latest accepted configuration, if any reload was accepted.
    pub fn latest(&self) -> Option<Arc<Config>> {
        self.config.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn publish(&self, config: Config) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(config));
        self.generation.fetch_add(1, Ordering::Release);
    }
}

/// Installs the SIGHUP handler (so a SIGHUP no longer ends the process) and
/// remembers how to read the configuration again. A SIGHUP before [`start`]
/// waits in the socket and is handled once the reload thread runs.
pub fn install(reread: Reread) -> std::io::Result<()> {
    let (reader, writer) = UnixStream::pair()?;
    // Installed before socket activation takes fd 3, so kept clear of the low
    // fds: a pair on fd 3 would pass for an inherited socket.
    let reader = UnixStream::from(above_activation_fds(reader.into())?);
    let writer = UnixStream::from(above_activation_fds(writer.into())?);
    writer.set_nonblocking(true)?;
    // SAFETY: the action only writes one byte to a non-blocking socket, which
    // is async-signal-safe; a full buffer drops the byte (one is enough).
    unsafe {
        signal_hook_registry::register(rustix::process::Signal::HUP.as_raw(), move || {
            let _ = rustix::io::write(&writer, &[1]);
        })
    }?;
    let _ = INSTALLED.set((Mutex::new(Some(reader)), reread));
    Ok(())
}

/// `fd` moved to a number above the ones systemd passes (3 and up, a few).
fn above_activation_fds(fd: std::os::fd::OwnedFd) -> std::io::Result<std::os::fd::OwnedFd> {
    const FLOOR: i32 = 64;
    rustix::io::fcntl_dupfd_cloexec(&fd, FLOOR).map_err(std::io::Error::from)
}

/// Starts the reload thread for the daemon whose state is `global`, running
/// `initial`; does nothing when [`install`] was not called (in-process tests).
pub fn start(global: Arc<Global>, initial: Config) {
    let Some((reader, reread)) = INSTALLED.get() else { return };
    let Some(mut reader) = reader.lock().unwrap_or_else(PoisonError::into_inner).take() else { return };
    let spawned = std::thread::Builder::new().name("handoff-reload".into()).spawn(move || {
        let mut current = initial;
        let mut signal = [0u8; 64];
        // The process ends with the workers; this thread just stops with it.
        while reader.read(&mut signal).is_ok_and(|n| n > 0) {
            current = reload(&global, current, reread);
        }
    });
    if let Err(error) = spawned {
        tracing::warn!(%error, "starting the reload thread failed; SIGHUP is ignored");
    }
}

/// One reload: the new configuration if accepted, else the current one.
fn reload(global: &Global, current: Config, reread: &Reread) -> Config {
    // logrotate's SIGHUP: the records file is reopened whatever the new file says.
    if let Some(records) = global.records() {
        records.reopen();
    }
    let new = match reread() {
        Ok(new) => new,
        Err(error) => {
            global.metrics.record_reload(false);
            tracing::error!(%error, "SIGHUP: the configuration was refused; the running one stays");
            return current;
        }
    };
    let plan = handoff_core::reload::plan(&current, &new);
    if !plan.restart_needed.is_empty() {
        tracing::warn!(
            settings = ?plan.restart_needed,
            "SIGHUP: these changed settings take effect only at the next start"
        );
    }
    global.metrics.record_reload(true);
    if plan.is_empty() {
        tracing::info!("SIGHUP: configuration read again; nothing a reload applies changed");
        return current;
    }
    global.limits.set_max_streams(new.max_streams);
    global.user_limits.set_max_per_user(new.max_streams_per_user);
    global.user_limits.budget().configure(new.user_token_budget, new.user_token_window);
    tracing::info!(applied = ?plan.applied, "SIGHUP: configuration reloaded; new handoffs use it, running streams finish as they started");
    global.published.publish(new.clone());
    new
}
