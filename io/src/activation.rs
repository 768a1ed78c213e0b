//! Socket activation (systemd's `sd_listen_fds` protocol): when `LISTEN_PID` is
//! our pid and `LISTEN_FDS` is 1, fd 3 is the listening socket, bound and
//! permissioned by the service manager. It is checked to be what `--socket-type`
//! expects before a single handoff is accepted; anything else stops the start.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use handoff_core::config::SocketType;
use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
use rustix::net::sockopt;
use rustix::net::{AddressFamily, SocketAddrUnix};

/// The first passed fd (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// The variables of the protocol; all are removed once read, so nothing this
/// process starts takes them as its own.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Why a passed socket cannot be used.
#[derive(Debug)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a count.
    BadCount(String),
    /// More than one fd: one `.socket` unit with one `Listen…=` line passes one.
    TooMany(usize),
    /// fd 3 is not open.
    NotOpen(io::Error),
    /// fd 3 is open but not a socket (or its options cannot be read).
    NotASocket(io::Error),
    /// Not an AF_UNIX socket.
    WrongFamily(AddressFamily),
    /// Not the socket type `--socket-type` asks for.
    WrongType {
        expected: SocketType,
        found: rustix::net::SocketType,
    },
    /// Bound but not listening (a `.socket` unit with `Accept=yes` passes
    /// connections, not the listener).
    NotListening,
    Io(&'static str, io::Error),
}

impl std::fmt::Display for ActivationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "socket activation: ")?;
        match self {
            ActivationError::BadCount(count) => write!(f, "LISTEN_FDS={count:?} is not a number of sockets"),
            ActivationError::TooMany(count) => write!(
                f,
                "LISTEN_FDS={count}: expected exactly one listening socket (one ListenSequentialPacket= line)"
            ),
            ActivationError::NotOpen(error) => write!(f, "fd 3 is not open: {error}"),
            ActivationError::NotASocket(error) => write!(f, "fd 3 is not a socket: {error}"),
            ActivationError::WrongFamily(family) => {
                write!(f, "fd 3 is not a Unix socket (address family {})", family.as_raw())
            }
            ActivationError::WrongType { expected, found } => write!(
                f,
                "fd 3 is a {} socket, but --socket-type {} expects {}",
                type_name(*found),
                match expected {
                    SocketType::Seqpacket => "seqpacket",
                    SocketType::Stream => "stream",
                },
                type_name(rustix_type(*expected))
            ),
            ActivationError::NotListening => {
                write!(f, "fd 3 is not listening (a .socket unit with Accept=yes passes connections, not a listener)")
            }
            ActivationError::Io(what, error) => write!(f, "fd 3: {what}: {error}"),
        }
    }
}

impl std::error::Error for ActivationError {}

fn rustix_type(socket_type: SocketType) -> rustix::net::SocketType {
    match socket_type {
        SocketType::Seqpacket => rustix::net::SocketType::SEQPACKET,
        SocketType::Stream => rustix::net::SocketType::STREAM,
    }
}

fn type_name(socket_type: rustix::net::SocketType) -> String {
    match socket_type {
        rustix::net::SocketType::SEQPACKET => "SOCK_SEQPACKET".to_owned(),
        rustix::net::SocketType::STREAM => "SOCK_STREAM".to_owned(),
        rustix::net::SocketType::DGRAM => "SOCK_DGRAM".to_owned(),
        other => format!("type {}", other.as_raw()),
    }
}

/// How many fds the environment passes to this process: 0 when the variables
/// are absent or name another process (they were meant for a parent).
pub fn passed_fds(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    our_pid: u32,
) -> Result<usize, ActivationError> {
    let for_us = listen_pid.and_then(|pid| pid.trim().parse::<u32>().ok()) == Some(our_pid);
    let Some(count) = listen_fds.filter(|_| for_us) else { return Ok(0) };
    count.trim().parse::<usize>().map_err(|_| ActivationError::BadCount(count.to_owned()))
}

/// The inherited listener, if this process was socket-activated: checked,
/// close-on-exec and non-blocking. `None`: bind `--socket` as usual. The
/// variables are removed either way. Call before any other thread starts (the
/// environment is changed).
pub fn take_listener(socket_type: SocketType) -> Result<Option<(OwnedFd, Option<String>)>, ActivationError> {
    let read = |name: &str| std::env::var(name).ok();
    let count = passed_fds(read("LISTEN_PID").as_deref(), read("LISTEN_FDS").as_deref(), std::process::id());
    // Only when set: changing the environment races C code reading it
    // (getaddrinfo, say) in tests that run daemons in their own threads.
    for name in VARIABLES.into_iter().filter(|name| std::env::var_os(name).is_some()) {
        std::env::remove_var(name);
    }
    match count? {
        0 => Ok(None),
        1 => {
            // SAFETY: fd 3 is only borrowed to ask whether it is open; nothing in
            // this process opened it (the protocol hands it to us before main).
            let borrowed = unsafe { BorrowedFd::borrow_raw(FIRST_FD) };
            fcntl_getfd(borrowed).map_err(|e| ActivationError::NotOpen(e.into()))?;
            // SAFETY: fd 3 is open and the activation protocol passes it to this
            // process to own; nothing else here refers to it.
            let fd = unsafe { OwnedFd::from_raw_fd(FIRST_FD) };
            check_listener(fd.as_fd(), socket_type)?;
            fcntl_setfd(&fd, FdFlags::CLOEXEC)
                .map_err(|e| ActivationError::Io("setting FD_CLOEXEC", e.into()))?;
            crate::sys::set_nonblocking(fd.as_fd())
                .map_err(|e| ActivationError::Io("setting O_NONBLOCK", e))?;
            let path = local_path(fd.as_fd());
            Ok(Some((fd, path)))
        }
        more => Err(ActivationError::TooMany(more)),
    }
}

/// An AF_UNIX socket of the configured type, listening.
pub fn check_listener(fd: BorrowedFd<'_>, socket_type: SocketType) -> Result<(), ActivationError> {
    let family = sockopt::socket_domain(fd).map_err(|e| ActivationError::NotASocket(e.into()))?;
    if family != AddressFamily::UNIX {
        return Err(ActivationError::WrongFamily(family));
    }
    let found = sockopt::socket_type(fd).map_err(|e| ActivationError::Io("reading SO_TYPE", e.into()))?;
    if found != rustix_type(socket_type) {
        return Err(ActivationError::WrongType { expected: socket_type, found });
    }
    let listening =
        sockopt::socket_acceptconn(fd).map_err(|e| ActivationError::Io("reading SO_ACCEPTCONN", e.into()))?;
    if !listening {
        return Err(ActivationError::NotListening);
    }
    Ok(())
}

/// The path the socket is bound to, for the log (abstract and unnamed: none).
fn local_path(fd: BorrowedFd<'_>) -> Option<String> {
    let address = SocketAddrUnix::try_from(rustix::net::getsockname(fd).ok()?).ok()?;
    address.path().map(|path| path.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socket_with, SocketFlags};

    #[test]
    fn variables_for_another_process_or_absent_mean_no_activation() {
        assert_eq!(passed_fds(None, None, 42).unwrap(), 0);
        assert_eq!(passed_fds(Some("41"), Some("1"), 42).unwrap(), 0);
        assert_eq!(passed_fds(Some("42"), None, 42).unwrap(), 0);
        assert_eq!(passed_fds(Some("not a pid"), Some("1"), 42).unwrap(), 0);
    }

    #[test]
    fn our_pid_takes_the_count_and_a_bad_count_is_refused() {
        assert_eq!(passed_fds(Some("42"), Some("1"), 42).unwrap(), 1);
        assert_eq!(passed_fds(Some("42"), Some("2"), 42).unwrap(), 2);
        let error = passed_fds(Some("42"), Some("one"), 42).unwrap_err();
        assert!(error.to_string().contains("LISTEN_FDS=\"one\""), "{error}");
    }

    fn unix_socket(socket_type: rustix::net::SocketType) -> OwnedFd {
        socket_with(AddressFamily::UNIX, socket_type, SocketFlags::CLOEXEC, None).unwrap()
    }

    fn listening(socket_type: rustix::net::SocketType) -> OwnedFd {
        let fd = unix_socket(socket_type);
        // An abstract address, unique per socket (an empty name is one fixed
        // name, so tests running at once collided): nothing on disk to clean up.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("handoff-activation-test-{}-{n}", std::process::id());
        rustix::net::bind(&fd, &SocketAddrUnix::new_abstract_name(name.as_bytes()).unwrap()).unwrap();
        rustix::net::listen(&fd, 1).unwrap();
        fd
    }

    #[test]
    fn a_listening_socket_of_the_configured_type_passes() {
        let seqpacket = listening(rustix::net::SocketType::SEQPACKET);
        check_listener(seqpacket.as_fd(), SocketType::Seqpacket).unwrap();
        let stream = listening(rustix::net::SocketType::STREAM);
        check_listener(stream.as_fd(), SocketType::Stream).unwrap();
    }

    #[test]
    fn the_wrong_type_a_non_listening_socket_and_a_file_are_refused() {
        let stream = listening(rustix::net::SocketType::STREAM);
        let error = check_listener(stream.as_fd(), SocketType::Seqpacket).unwrap_err();
        assert!(matches!(error, ActivationError::WrongType { .. }), "{error}");
        assert!(error.to_string().contains("SOCK_STREAM"), "{error}");

        let unbound = unix_socket(rustix::net::SocketType::SEQPACKET);
        let error = check_listener(unbound.as_fd(), SocketType::Seqpacket).unwrap_err();
        assert!(matches!(error, ActivationError::NotListening), "{error}");

        let file = std::fs::File::open("/dev/null").unwrap();
        let error = check_listener(file.as_fd(), SocketType::Seqpacket).unwrap_err();
        assert!(matches!(error, ActivationError::NotASocket(_)), "{error}");

        let inet =
            socket_with(AddressFamily::INET, rustix::net::SocketType::STREAM, SocketFlags::CLOEXEC, None)
                .unwrap();
        let error = check_listener(inet.as_fd(), SocketType::Stream).unwrap_err();
        assert!(matches!(error, ActivationError::WrongFamily(_)), "{error}");
    }
}
