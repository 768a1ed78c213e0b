//! The Unix socket mod_socket_handoff connects to: binding it safely, accepting,
//! and receiving one handoff (data + the client's fd via SCM_RIGHTS).

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use handoff_core::config::SocketType;
use handoff_core::handoff::MAX_HANDOFF_BYTES;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SocketAddrUnix,
    SocketFlags,
};

/// Why the listening socket could not be set up.
#[derive(Debug)]
pub enum BindError {
    /// Another daemon is accepting on this path.
    InUse(PathBuf),
    /// Something that is not a socket is at the path; it is left alone.
    NotASocket(PathBuf),
    /// `--socket-owner` or `--socket-group` names no account.
    Account {
        /// The flag the name came from.
        flag: &'static str,
        error: crate::accounts::AccountError,
    },
    Io {
        what: &'static str,
        path: PathBuf,
        error: io::Error,
    },
}

impl std::fmt::Display for BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindError::InUse(path) => {
                write!(f, "{}: another daemon is listening on this socket", path.display())
            }
            BindError::NotASocket(path) => {
                write!(f, "{}: exists and is not a socket; refusing to replace it", path.display())
            }
            BindError::Account { flag, error } => write!(f, "{flag}: {error}"),
            BindError::Io { what, path, error } => write!(f, "{}: {what}: {error}", path.display()),
        }
    }
}

impl std::error::Error for BindError {}

fn rustix_type(socket_type: SocketType) -> rustix::net::SocketType {
    match socket_type {
        SocketType::Seqpacket => rustix::net::SocketType::SEQPACKET,
        SocketType::Stream => rustix::net::SocketType::STREAM,
    }
}

/// Who may connect: the socket file's mode, and its owner and group (names or
/// numeric ids) when they are to be changed from the daemon's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Access<'a> {
    pub mode: u32,
    pub owner: Option<&'a str>,
    pub group: Option<&'a str>,
}

impl<'a> Access<'a> {
    /// The socket access the configuration asks for.
    pub fn of(config: &'a handoff_core::config::Config) -> Access<'a> {
        Access {
            mode: config.socket_mode,
            owner: config.socket_owner.as_deref(),
            group: config.socket_group.as_deref(),
        }
    }
}

/// Creates, binds and listens: non-blocking, close-on-exec, owner, group and mode
/// applied before `listen`, so until the file is as configured every connect is
/// refused (the module retries those) and nobody else ever gets in. A stale
/// socket file (nobody accepting) is replaced; a live daemon's socket is not.
/// Owner and group names are resolved first: an unknown one fails before any
/// file is touched.
pub fn bind(path: &Path, socket_type: SocketType, access: Access<'_>) -> Result<OwnedFd, BindError> {
    let io_error = |what, error: io::Error| BindError::Io { what, path: path.to_owned(), error };
    let account = |flag, error| BindError::Account { flag, error };
    let uid =
        access.owner.map(crate::accounts::user_id).transpose().map_err(|e| account("--socket-owner", e))?;
    let gid =
        access.group.map(crate::accounts::group_id).transpose().map_err(|e| account("--socket-group", e))?;
    let address = SocketAddrUnix::new(path).map_err(|e| io_error("socket path", e.into()))?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => return Err(BindError::NotASocket(path.to_owned())),
        Ok(_) => {
            if is_live(&address, socket_type) {
                return Err(BindError::InUse(path.to_owned()));
            }
            std::fs::remove_file(path).map_err(|e| io_error("removing the stale socket", e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("inspecting the socket path", e)),
    }
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        rustix_type(socket_type),
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| io_error("socket", e.into()))?;
    // The file is created with the mode asked for (the umask is set for the
    // bind, while only this thread runs), so nothing changes it by path later,
    // where a swapped-in symlink would redirect a chmod.
    let creation_mask = rustix::fs::Mode::from_bits_truncate(!access.mode & 0o777);
    let previous_mask = rustix::process::umask(creation_mask);
    let bound = rustix::net::bind(&fd, &address);
    rustix::process::umask(previous_mask);
    bound.map_err(|e| io_error("bind", e.into()))?;
    // Owner and group by path, never through a symlink.
    let permitted = if uid.is_some() || gid.is_some() {
        rustix::fs::chownat(
            rustix::fs::CWD,
            path,
            uid.map(rustix::fs::Uid::from_raw),
            gid.map(rustix::fs::Gid::from_raw),
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io_error("chown", e.into()))
    } else {
        Ok(())
    }
    .and_then(|()| {
        // Bits the umask cannot give (setuid, setgid, sticky) mean nothing on a
        // socket; a mode with them is still honoured as asked.
        if access.mode & !0o777 == 0 {
            return Ok(());
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(access.mode))
            .map_err(|e| io_error("chmod", e))
    });
    if let Err(error) = permitted {
        // Not left behind with the wrong owner for the next start to trip over.
        let _ = std::fs::remove_file(path);
        return Err(error);
    }
    // The kernel caps this at net.core.somaxconn; ask for a deep queue so bursts
    // wait in the kernel instead of being refused.
    rustix::net::listen(&fd, 65_535).map_err(|e| io_error("listen", e.into()))?;
    Ok(fd)
}

fn is_live(address: &SocketAddrUnix, socket_type: SocketType) -> bool {
    let Ok(probe) =
        rustix::net::socket_with(AddressFamily::UNIX, rustix_type(socket_type), SocketFlags::CLOEXEC, None)
    else {
        return false;
    };
    rustix::net::connect(&probe, address).is_ok()
}

/// Accepts one connection (non-blocking, close-on-exec).
pub fn accept(listener: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC).map_err(Into::into)
}

/// One received handoff message.
#[derive(Debug, Default)]
pub struct Received {
    pub data: Vec<u8>,
    /// The client's socket: the first fd, unless the control data was cut.
    pub client: Option<OwnedFd>,
    /// The data was longer than the limit (MSG_TRUNC, or a stream over the limit).
    pub truncated: bool,
    /// How many fds arrived (extra ones are closed at once).
    pub fds_received: usize,
    /// The control data was cut (MSG_CTRUNC): every fd was closed, none trusted.
    pub control_truncated: bool,
}

/// Room for a few fds: more than one is a protocol error, but they must still be
/// received to be closed.
const MAX_FDS: usize = 8;

/// Receives from an accepted connection. `WouldBlock` means nothing (more) arrived
/// yet: call again with the same `partial`. SEQPACKET: one call reads the whole
/// message. STREAM (older modules): reads until EOF or the size limit.
pub fn receive(
    conn: BorrowedFd<'_>,
    socket_type: SocketType,
    partial: &mut Received,
) -> io::Result<Received> {
    match socket_type {
        SocketType::Seqpacket => receive_message(conn, partial),
        SocketType::Stream => receive_stream(conn, partial),
    }
}

fn receive_message(conn: BorrowedFd<'_>, received: &mut Received) -> io::Result<Received> {
    thread_local! {
        // One byte more than the limit tells an oversize message apart even where
        // MSG_TRUNC is not reported. Reused: a handoff is copied out at its size.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; MAX_HANDOFF_BYTES + 1]);
    }
    let (bytes, flags) = SCRATCH.with(|scratch| -> io::Result<_> {
        let mut scratch = scratch.borrow_mut();
        let (bytes, flags) = recv_with_fds(conn, &mut scratch, received)?;
        received.data = scratch[..bytes.min(MAX_HANDOFF_BYTES)].to_vec();
        Ok((bytes, flags))
    })?;
    if bytes == 0 && received.fds_received == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a handoff"));
    }
    received.truncated = flags.contains(ReturnFlags::TRUNC) || bytes > MAX_HANDOFF_BYTES;
    Ok(std::mem::take(received))
}

fn receive_stream(conn: BorrowedFd<'_>, received: &mut Received) -> io::Result<Received> {
    let mut chunk = [0u8; 8192];
    loop {
        let (bytes, _) = recv_with_fds(conn, &mut chunk, received)?;
        if bytes == 0 {
            break;
        }
        let room = (MAX_HANDOFF_BYTES + 1).saturating_sub(received.data.len());
        received.data.extend_from_slice(&chunk[..bytes.min(room)]);
        if received.data.len() > MAX_HANDOFF_BYTES {
            received.truncated = true;
            received.data.truncate(MAX_HANDOFF_BYTES);
            break;
        }
    }
    Ok(std::mem::take(received))
}

/// One `recvmsg` with MSG_CMSG_CLOEXEC. Fds are counted; the first is kept as the
/// client and any others are closed, unless the control data was cut, in which
/// case every fd is closed (none can be trusted to be the client).
fn recv_with_fds(
    conn: BorrowedFd<'_>,
    buf: &mut [u8],
    received: &mut Received,
) -> io::Result<(usize, ReturnFlags)> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    let message = rustix::net::recvmsg(conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for ancillary in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = ancillary {
            for fd in fds {
                received.fds_received += 1;
                if received.fds_received == 1 {
                    received.client = Some(fd);
                }
                // Any further fd is dropped here, which closes it.
            }
        }
    }
    if message.flags.contains(ReturnFlags::CTRUNC) {
        received.control_truncated = true;
    }
    if received.control_truncated {
        received.client = None;
    }
    Ok((message.bytes, message.flags))
}

/// Removes the socket file when the daemon stops.
pub fn remove_socket_file(path: &Path) {
    let _ = std::fs::remove_file(path);
}
