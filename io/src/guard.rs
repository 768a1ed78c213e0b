//! The facts core's [`handoff_core::guard`] decides on: the connecting peer's
//! credentials, what kind of fd a handoff carried, whether the fd table has
//! room, and the reserve of fds held for when it has none.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use handoff_core::config::Config;
use handoff_core::guard::{AcceptError, FdKind, Peer, PeerPolicy};
use rustix::io::Errno;

use crate::accounts::{self, AccountError};

/// `--allow-uid` / `--allow-gid` resolved to ids (names from /etc/passwd and
/// /etc/group); an unknown name fails the start, naming its flag.
pub fn peer_policy(config: &Config) -> Result<PeerPolicy, (&'static str, AccountError)> {
    let uids = config
        .allow_uids
        .iter()
        .map(|name| accounts::user_id(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ("--allow-uid", error))?;
    let gids = config
        .allow_gids
        .iter()
        .map(|name| accounts::group_id(name))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| ("--allow-gid", error))?;
    Ok(PeerPolicy::new(uids, gids))
}

/// Who is at the other end of an accepted module connection (`SO_PEERCRED`);
/// `None` when the kernel will not say.
pub fn peer(conn: BorrowedFd<'_>) -> Option<Peer> {
    let cred = rustix::net::sockopt::socket_peercred(conn).ok()?;
    Some(Peer { pid: cred.pid.as_raw_nonzero().get(), uid: cred.uid.as_raw(), gid: cred.gid.as_raw() })
}

/// What a handed-off fd is: its `SO_TYPE` when it is a socket, else its file
/// type (`fstat`).
pub fn classify(fd: BorrowedFd<'_>) -> FdKind {
    use rustix::net::SocketType;
    match rustix::net::sockopt::socket_type(fd) {
        Ok(SocketType::STREAM) => FdKind::StreamSocket,
        Ok(SocketType::DGRAM) => FdKind::DatagramSocket,
        Ok(SocketType::SEQPACKET) => FdKind::SeqpacketSocket,
        Ok(_) => FdKind::OtherSocket,
        Err(Errno::NOTSOCK) => match rustix::fs::fstat(fd) {
            Ok(stat) => match rustix::fs::FileType::from_raw_mode(stat.st_mode) {
                rustix::fs::FileType::Fifo => FdKind::Pipe,
                rustix::fs::FileType::RegularFile => FdKind::RegularFile,
                rustix::fs::FileType::CharacterDevice => FdKind::CharDevice,
                rustix::fs::FileType::Directory => FdKind::Directory,
                _ => FdKind::Other,
            },
            Err(_) => FdKind::Other,
        },
        Err(_) => FdKind::Other,
    }
}

/// How an accept error is met (core's [`AcceptError`]).
pub fn accept_error(error: &io::Error) -> AcceptError {
    let is = |errnos: &[Errno]| {
        error.raw_os_error().is_some_and(|code| errnos.iter().any(|errno| errno.raw_os_error() == code))
    };
    if is(&[Errno::MFILE, Errno::NFILE]) {
        AcceptError::OutOfFds
    } else if is(&[Errno::NOBUFS, Errno::NOMEM]) {
        AcceptError::OutOfMemory
    } else {
        AcceptError::Other
    }
}

/// Whether one more fd could be opened now (a `dup` of `fd`, closed at once):
/// the room `recvmsg` needs to install a client socket.
pub fn has_free_fd(fd: BorrowedFd<'_>) -> bool {
    match rustix::io::fcntl_dupfd_cloexec(fd, 0) {
        Ok(_probe) => true,
        Err(Errno::MFILE | Errno::NFILE) => false,
        // Another failure says nothing about room; recvmsg will tell.
        Err(_) => true,
    }
}

/// Fds held open on `/dev/null` (close-on-exec) to be closed when the table is
/// full, making room for one more handoff. One worker's, shared by its tasks
/// (a handoff still being received may need it); the lock is taken only to
/// release or re-open, which happens only when the table was full, and the
/// count is an atomic so the usual check costs no lock.
#[derive(Debug)]
pub struct Reserve {
    fds: Mutex<Vec<OwnedFd>>,
    held: AtomicUsize,
    size: usize,
}

impl Reserve {
    /// Opens `size` fds (as many as it can: a shortfall is made up later).
    pub fn open(size: usize) -> Reserve {
        let reserve = Reserve { fds: Mutex::new(Vec::with_capacity(size)), held: AtomicUsize::new(0), size };
        reserve.refill();
        reserve
    }

    fn fds(&self) -> MutexGuard<'_, Vec<OwnedFd>> {
        self.fds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many are held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// Closes every fd held; how many were freed.
    pub fn release(&self) -> usize {
        let mut fds = self.fds();
        let freed = fds.len();
        fds.clear();
        self.held.store(0, Ordering::Relaxed);
        freed
    }

    /// Re-opens what is missing; true once the reserve is whole. No lock and
    /// no syscall when it is.
    pub fn refill(&self) -> bool {
        if self.held() >= self.size {
            return true;
        }
        let mut fds = self.fds();
        while fds.len() < self.size {
            match open_null() {
                Ok(fd) => fds.push(fd),
                Err(_) => break,
            }
        }
        self.held.store(fds.len(), Ordering::Relaxed);
        fds.len() >= self.size
    }

    /// The kind of every fd held (for tests).
    pub fn kinds(&self) -> Vec<FdKind> {
        self.fds().iter().map(|fd| classify(fd.as_fd())).collect()
    }
}

fn open_null() -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    rustix::fs::open("/dev/null", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};

    #[test]
    fn each_kind_of_fd_is_told_apart() {
        let pair = |kind| socketpair(AddressFamily::UNIX, kind, SocketFlags::CLOEXEC, None).unwrap();
        let (stream, _peer) = pair(SocketType::STREAM);
        assert_eq!(classify(stream.as_fd()), FdKind::StreamSocket);
        let (dgram, _peer) = pair(SocketType::DGRAM);
        assert_eq!(classify(dgram.as_fd()), FdKind::DatagramSocket);
        let (seqpacket, _peer) = pair(SocketType::SEQPACKET);
        assert_eq!(classify(seqpacket.as_fd()), FdKind::SeqpacketSocket);
        let (read, _write) = rustix::pipe::pipe().unwrap();
        assert_eq!(classify(read.as_fd()), FdKind::Pipe);
        let null = open_null().unwrap();
        assert_eq!(classify(null.as_fd()), FdKind::CharDevice);
        let file = std::fs::File::open("/proc/self/status").unwrap();
        assert_eq!(classify(file.as_fd()), FdKind::RegularFile);
        let dir = std::fs::File::open("/").unwrap();
        assert_eq!(classify(dir.as_fd()), FdKind::Directory);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(classify(udp.as_fd()), FdKind::DatagramSocket);
    }

    #[test]
    fn the_peer_of_a_socketpair_is_this_process() {
        let (ours, _theirs) =
            socketpair(AddressFamily::UNIX, SocketType::STREAM, SocketFlags::CLOEXEC, None).unwrap();
        let peer = peer(ours.as_fd()).expect("credentials of a Unix socket");
        assert_eq!(peer.pid, std::process::id() as i32);
        assert_eq!(peer.uid, rustix::process::geteuid().as_raw());
        assert_eq!(peer.gid, rustix::process::getegid().as_raw());
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(super::peer(udp.as_fd()), None, "no credentials on a UDP socket");
    }

    #[test]
    fn the_reserve_releases_and_refills() {
        let reserve = Reserve::open(2);
        assert_eq!(reserve.held(), 2);
        assert_eq!(reserve.kinds(), [FdKind::CharDevice, FdKind::CharDevice]);
        assert_eq!(reserve.release(), 2);
        assert_eq!((reserve.held(), reserve.release()), (0, 0));
        assert!(reserve.refill());
        assert_eq!(reserve.held(), 2);
    }

    #[test]
    fn accept_errors_are_sorted_by_what_they_lack() {
        let errno = |e: Errno| io::Error::from_raw_os_error(e.raw_os_error());
        assert_eq!(accept_error(&errno(Errno::MFILE)), AcceptError::OutOfFds);
        assert_eq!(accept_error(&errno(Errno::NFILE)), AcceptError::OutOfFds);
        assert_eq!(accept_error(&errno(Errno::NOBUFS)), AcceptError::OutOfMemory);
        assert_eq!(accept_error(&errno(Errno::CONNABORTED)), AcceptError::Other);
        let null = open_null().unwrap();
        assert!(has_free_fd(null.as_fd()));
    }
}
