//! The Unix socket the module connects to: binding it, and receiving one handoff
//! (its data and the client's fd via SCM_RIGHTS) on a blocking connection.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::time::Instant;

use handoff_core::config::{Config, SocketType};
use handoff_core::handoff::{self, Handoff, HandoffError, MAX_HANDOFF_BYTES};
use rustix::event::PollFlags;
use rustix::net::{
    self as net, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
};

use crate::client::wait;

fn kind(socket_type: SocketType) -> net::SocketType {
    match socket_type {
        SocketType::Seqpacket => net::SocketType::SEQPACKET,
        SocketType::Stream => net::SocketType::STREAM,
    }
}

/// Binds and listens (non-blocking, so the backlog can be emptied at shutdown). A
/// stale socket file is replaced; a live daemon's socket or a non-socket is not.
pub fn bind(config: &Config) -> Result<OwnedFd, String> {
    let path = &config.socket_path;
    let fail = |what: &str, error: rustix::io::Errno| format!("{}: {what}: {error}", path.display());
    let address = net::SocketAddrUnix::new(path).map_err(|e| fail("socket path", e))?;
    let socket = |flags| net::socket_with(AddressFamily::UNIX, kind(config.socket_type), flags, None);
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(format!("{}: exists and is not a socket; refusing to replace it", path.display()))
        }
        Ok(_) => {
            if socket(net::SocketFlags::CLOEXEC).is_ok_and(|probe| net::connect(&probe, &address).is_ok()) {
                return Err(format!("{}: another daemon is listening on this socket", path.display()));
            }
            std::fs::remove_file(path)
                .map_err(|e| format!("{}: removing the stale socket: {e}", path.display()))?;
        }
        Err(_) => {}
    }
    let fd = socket(net::SocketFlags::CLOEXEC | net::SocketFlags::NONBLOCK).map_err(|e| fail("socket", e))?;
    // Created with its mode: nothing changes the file by path afterwards.
    let previous = rustix::process::umask(rustix::fs::Mode::from_bits_truncate(!config.socket_mode & 0o777));
    let bound = net::bind(&fd, &address);
    rustix::process::umask(previous);
    bound.map_err(|e| fail("bind", e))?;
    net::listen(&fd, 65_535).map_err(|e| fail("listen", e))?;
    Ok(fd)
}

/// What one module connection delivered, checked as io/'s receiver checks it.
pub enum Received {
    /// A client and its handoff (or why the handoff is bad: the client gets 400).
    Client(OwnedFd, Box<Result<Handoff, HandoffError>>),
    /// Nothing usable: no fd, or control data that was cut (every fd is closed).
    Dropped(&'static str),
}

/// Receives one handoff from `conn`, waiting at most until `deadline`. SEQPACKET
/// is one message; STREAM reads until EOF or one byte past the size limit.
pub fn receive(conn: &OwnedFd, socket_type: SocketType, deadline: Instant) -> io::Result<Received> {
    let mut data = vec![0u8; MAX_HANDOFF_BYTES + 1];
    let (mut len, mut fds, mut client, mut cut, mut truncated) = (0, 0, None, false, false);
    loop {
        if wait(conn, PollFlags::IN, None, Some(deadline))?.fd.is_empty() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "the module sent no handoff in time"));
        }
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [io::IoSliceMut::new(&mut data[len..])];
        let message = net::recvmsg(conn, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
        for ancillary in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = ancillary {
                // The first fd is the client; any other is closed as it drops.
                for fd in received {
                    fds += 1;
                    client = client.or(Some(fd));
                }
            }
        }
        cut |= message.flags.contains(ReturnFlags::CTRUNC);
        truncated |= message.flags.contains(ReturnFlags::TRUNC);
        len += message.bytes.min(data.len() - len);
        let ended = message.bytes == 0 || len == data.len();
        if socket_type == SocketType::Seqpacket && message.bytes == 0 && fds == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a handoff"));
        }
        if socket_type == SocketType::Seqpacket || ended {
            break;
        }
    }
    if fds > 1 {
        eprintln!("handoff-blocking: handoff carried {} extra fds; closed them", fds - 1);
    }
    let Some(client) = client.filter(|_| !cut) else {
        return Ok(Received::Dropped(if cut { "control data truncated" } else { "no fd attached" }));
    };
    let decoded = if truncated || len > MAX_HANDOFF_BYTES {
        Err(HandoffError::Truncated)
    } else {
        handoff::decode(&data[..len])
    };
    Ok(Received::Client(client, Box::new(decoded)))
}
