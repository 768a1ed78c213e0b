//! The service manager's notification protocol (`sd_notify`): `READY=1` once
//! every worker accepts, `STOPPING=1` when shutdown begins, and `WATCHDOG=1`
//! every half `WATCHDOG_USEC` while every accept loop still turns, so a hung
//! daemon stops feeding the watchdog and is restarted. Without `NOTIFY_SOCKET`
//! nothing is sent and nothing fails.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use handoff_core::liveness::Liveness;
use rustix::net::{AddressFamily, SendFlags, SocketAddrUnix, SocketFlags, SocketType};

use crate::daemon::Global;
use crate::runtime::{sleep_until, Runtime};

/// While waiting for every worker to start accepting: how often to look.
const READY_POLL: Duration = Duration::from_millis(10);

/// A datagram socket aimed at `NOTIFY_SOCKET`, and the watchdog's period.
#[derive(Debug)]
pub struct Notifier {
    socket: OwnedFd,
    address: SocketAddrUnix,
    /// Half of `WATCHDOG_USEC` when the watchdog is on for this process.
    watchdog_every: Option<Duration>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`, which are then
    /// removed (nothing this process starts must answer for it). `None` when
    /// there is no socket, or it cannot be used (logged: the daemon still runs).
    /// Call before any other thread starts (the environment is changed).
    pub fn from_env() -> Option<Arc<Notifier>> {
        let read = |name: &str| std::env::var(name).ok();
        let target = read("NOTIFY_SOCKET");
        let watchdog_every = watchdog_period(
            read("WATCHDOG_USEC").as_deref(),
            read("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        // Only when set (see `activation::take_listener`).
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            if std::env::var_os(name).is_some() {
                std::env::remove_var(name);
            }
        }
        let target = target.filter(|target| !target.is_empty())?;
        match Notifier::new(&target, watchdog_every) {
            Ok(notifier) => Some(Arc::new(notifier)),
            Err(error) => {
                tracing::warn!(notify_socket = %target, %error, "cannot notify the service manager");
                None
            }
        }
    }

    /// A notifier for `target`: a path, or `@name` for an abstract socket.
    pub fn new(target: &str, watchdog_every: Option<Duration>) -> std::io::Result<Notifier> {
        let address = match target.strip_prefix('@') {
            Some(name) => SocketAddrUnix::new_abstract_name(name.as_bytes())?,
            None if target.starts_with('/') => SocketAddrUnix::new(target)?,
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "NOTIFY_SOCKET is neither a path nor an abstract (@) name",
                ))
            }
        };
        // Non-blocking: a manager that stopped reading must never stall a worker.
        let socket = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )?;
        Ok(Notifier { socket, address, watchdog_every })
    }

    /// Sends one message; a failure is logged, never fatal.
    pub fn send(&self, message: &str) {
        if let Err(error) =
            rustix::net::sendto(&self.socket, message.as_bytes(), SendFlags::empty(), &self.address)
        {
            tracing::warn!(message, %error, "notifying the service manager failed");
        }
    }

    /// Tells the manager shutdown began (it waits for the exit from here on).
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}

/// Half of `WATCHDOG_USEC` (as `sd_watchdog_enabled` recommends), when it is a
/// positive number and `WATCHDOG_PID` is absent or ours.
pub fn watchdog_period(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|&usec| usec > 0)?;
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// Runs on worker 0's runtime: `READY=1` once `workers` accept loops run, then
/// `WATCHDOG=1` each period while [`Global::alive`]; ends when draining begins
/// (`STOPPING=1` is sent by the worker then) or when there is no watchdog.
pub async fn serve<R: Runtime>(
    runtime: R,
    notifier: Arc<Notifier>,
    global: Arc<Global>,
    workers: usize,
    liveness: Liveness,
) {
    while global.accepting_workers() < workers {
        if global.is_draining() {
            return;
        }
        sleep_until(&runtime, runtime.now() + READY_POLL).await;
    }
    notifier.send("READY=1");
    tracing::info!(workers, watchdog = ?notifier.watchdog_every, "told the service manager we are ready");
    let Some(every) = notifier.watchdog_every else { return };
    loop {
        if global.is_draining() {
            return;
        }
        if global.alive(runtime.now(), &liveness) {
            notifier.send("WATCHDOG=1");
        } else {
            // Not fed: the manager restarts the daemon when its timeout passes.
            tracing::error!("an accept loop stopped turning; not feeding the watchdog");
        }
        sleep_until(&runtime, runtime.now() + every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::linux::net::SocketAddrExt;

    #[test]
    fn the_watchdog_period_is_half_the_timeout_and_only_for_our_pid() {
        assert_eq!(watchdog_period(Some("400000"), None, 7), Some(Duration::from_millis(200)));
        assert_eq!(watchdog_period(Some("400000"), Some("7"), 7), Some(Duration::from_millis(200)));
        assert_eq!(watchdog_period(Some("400000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(Some("soon"), None, 7), None);
        assert_eq!(watchdog_period(None, Some("7"), 7), None);
    }

    #[test]
    fn messages_reach_a_path_and_an_abstract_socket() {
        let dir = std::env::temp_dir().join(format!("handoff-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let by_path = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        Notifier::new(path.to_str().unwrap(), None).unwrap().send("READY=1");
        let mut buf = [0u8; 64];
        let n = by_path.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        let name = format!("handoff-notify-test-{}", std::process::id());
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_socket = std::os::unix::net::UnixDatagram::bind_addr(&address).unwrap();
        Notifier::new(&format!("@{name}"), None).unwrap().stopping();
        let n = abstract_socket.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }

    #[test]
    fn a_target_that_is_not_a_unix_socket_is_refused() {
        assert!(Notifier::new("vsock:2:1234", None).is_err());
    }
}
