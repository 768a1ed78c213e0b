//! What the daemon guards against before a handoff becomes a stream: who may
//! connect (`--allow-uid` / `--allow-gid`), which handed-off fds are served
//! (stream sockets only), and what it does when the process runs out of file
//! descriptors. Each is a decision taken here; handoff-io fetches the facts
//! (`SO_PEERCRED`, `SO_TYPE`, `fstat`, the errno) and carries it out.
//!
//! # Running out of fds
//! A handoff needs two free fds: one for the accepted module connection, one
//! for the client socket `recvmsg` installs. Each worker keeps
//! [`FdGuard::reserve_fds`] (two) fds open on `/dev/null` and releases them
//! when the table is full, so that one more handoff can still be taken and its
//! client told `503` with `Retry-After` ([`exhausted_response`]) instead of a
//! reset. The reserve is per worker: releasing it frees slots in the
//! process-wide table that another worker's accept may take first; that worker
//! then meets the same shortage and uses its own reserve, so the reserves
//! never have to be shared (no lock) and cost two fds a worker.
//!
//! When only one fd is free, `accept` succeeds and the kernel, having no slot
//! for the client fd, drops it and reports `MSG_CTRUNC`: that client is lost
//! and nothing can answer it. So once the daemon has seen a shortage it checks
//! for a second free fd after every accept for [`FdGuard::watch_for`], and
//! uses the reserve when there is none; only the handoff that reveals a
//! shortage can be lost this way (counted as `fd_dropped`).
//!
//! With no free fd and the reserve spent (another worker took the slots it
//! freed), a handoff is not received: its fd stays in flight in the kernel
//! and the receive is tried again every [`FdGuard::room_wait`] until the
//! receive timeout. While a shortage is watched, workers take fds one at a
//! time (io's fd turn), so a slot one found free is not taken by another
//! before its receive.
//!
//! The reserve's `503` is one write and an immediate close, not the linger an
//! ordinary response gets: while that fd stays open the reserve cannot be
//! re-opened, and the next handoff would find none.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;

use crate::admission::Refusal;

/// Who may hand off: the peer credentials (`SO_PEERCRED`) the module's
/// connection carries, against the allowed uids and gids. Both lists empty:
/// anyone who can open the socket (its mode is then the only guard).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerPolicy {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

/// A connecting process as the kernel reports it (`SO_PEERCRED`, taken at
/// `connect`): its pid, effective uid and effective (primary) gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Process id of the process that connected (for the log only; the
    /// policy does not look at it).
    pub pid: i32,
    /// Effective uid, checked against `--allow-uid`.
    pub uid: u32,
    /// Effective (primary) gid, checked against `--allow-gid`.
    pub gid: u32,
}

impl PeerPolicy {
    /// A policy allowing the peers whose uid is in `uids` or whose gid is in
    /// `gids` (numeric ids, already resolved from names). Both empty: open.
    pub fn new(uids: Vec<u32>, gids: Vec<u32>) -> PeerPolicy {
        PeerPolicy { uids, gids }
    }

    /// True when no list is set: no credentials need to be fetched.
    pub fn is_open(&self) -> bool {
        self.uids.is_empty() && self.gids.is_empty()
    }

    /// Whether `peer` may hand off: its uid is allowed, or its gid is. The gid
    /// is the peer's effective group, not its supplementary groups (the kernel
    /// reports only that one), so `--allow-gid` names Apache's own group.
    /// `None` (the credentials could not be read) is refused unless the policy
    /// is open: what cannot be checked is not trusted.
    pub fn allows(&self, peer: Option<Peer>) -> bool {
        if self.is_open() {
            return true;
        }
        peer.is_some_and(|peer| self.uids.contains(&peer.uid) || self.gids.contains(&peer.gid))
    }
}

/// What a handed-off fd is. Only [`FdKind::StreamSocket`] is served: the
/// response is a byte stream, and written into anything else it would be cut
/// into datagrams, land in a file or a pipe, or fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FdKind {
    /// A `SOCK_STREAM` socket (TCP or Unix stream): the only kind served.
    StreamSocket,
    /// A `SOCK_DGRAM` socket (UDP or Unix datagram).
    DatagramSocket,
    /// A `SOCK_SEQPACKET` socket.
    SeqpacketSocket,
    /// A socket of another type (raw, RDM).
    OtherSocket,
    /// A pipe or FIFO.
    Pipe,
    /// A regular file.
    RegularFile,
    /// A character device (`/dev/null`, a terminal).
    CharDevice,
    /// A directory.
    Directory,
    /// Anything else, or an fd whose type could not be read.
    Other,
}

impl FdKind {
    /// Every kind, once each. The position in this list is the kind's bit in
    /// [`OncePerKind`], so a new variant must be added here too.
    pub const ALL: [FdKind; 9] = [
        FdKind::StreamSocket,
        FdKind::DatagramSocket,
        FdKind::SeqpacketSocket,
        FdKind::OtherSocket,
        FdKind::Pipe,
        FdKind::RegularFile,
        FdKind::CharDevice,
        FdKind::Directory,
        FdKind::Other,
    ];

    /// Whether a stream is served on it. Anything else is closed without a
    /// byte written.
    pub fn is_served(self) -> bool {
        self == FdKind::StreamSocket
    }

    /// The word the log line names it by.
    pub fn label(self) -> &'static str {
        match self {
            FdKind::StreamSocket => "stream_socket",
            FdKind::DatagramSocket => "datagram_socket",
            FdKind::SeqpacketSocket => "seqpacket_socket",
            FdKind::OtherSocket => "other_socket",
            FdKind::Pipe => "pipe",
            FdKind::RegularFile => "regular_file",
            FdKind::CharDevice => "char_device",
            FdKind::Directory => "directory",
            FdKind::Other => "other",
        }
    }

    fn bit(self) -> u32 {
        let index = FdKind::ALL.iter().position(|&kind| kind == self).unwrap_or(FdKind::ALL.len() - 1);
        1 << index
    }
}

/// Remembers which kinds were already logged, so each is logged once per
/// process however often it comes (one atomic, shared by every worker).
#[derive(Debug, Default)]
pub struct OncePerKind(AtomicU32);

impl OncePerKind {
    /// True the first time `kind` is seen, false ever after.
    pub fn first(&self, kind: FdKind) -> bool {
        self.0.fetch_or(kind.bit(), Relaxed) & kind.bit() == 0
    }
}

/// At most one log line per interval; the lines held back are counted and
/// reported with the next one. Time is passed in as the offset from any fixed
/// start the caller keeps. Atomics, so it can sit in a worker's shared state;
/// only that worker writes it.
#[derive(Debug)]
pub struct LogLimit {
    interval: Duration,
    /// Milliseconds of the last line logged, `u64::MAX` before the first.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A limit of one line per `interval` (kept at millisecond resolution);
    /// the first [`LogLimit::check`] always lets its line through.
    pub fn new(interval: Duration) -> LogLimit {
        LogLimit { interval, last: AtomicU64::new(u64::MAX), suppressed: AtomicU64::new(0) }
    }

    /// `Some(held back since the last line)` when a line may be logged at
    /// `now`; `None` (and one more held back) otherwise.
    pub fn check(&self, now: Duration) -> Option<u64> {
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX - 1);
        let interval = u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Relaxed);
        if last != u64::MAX && now_ms.saturating_sub(last) < interval {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        self.last.store(now_ms, Relaxed);
        Some(self.suppressed.swap(0, Relaxed))
    }
}

/// How the daemon meets a full fd table, and how it logs refusals that can
/// come in floods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdGuard {
    /// Fds each worker holds open to release when the table is full: one for
    /// the module's connection, one for the client fd it carries.
    pub reserve_fds: usize,
    /// After a shortage, how long every accept is followed by a check for a
    /// second free fd (two syscalls), so a handoff is never accepted into a
    /// table with no room for its client.
    pub watch_for: Duration,
    /// With no free fd and the reserve spent, a handoff is left queued (its
    /// fd stays in flight) and tried again after this, until the receive
    /// timeout: received then, it would be lost.
    pub room_wait: Duration,
    /// At most one log line per this interval for fd shortages and refused
    /// peers (with the count held back).
    pub log_interval: Duration,
    /// Fds the daemon needs besides client sockets and backend connections
    /// (its listener, event loop, logs, metrics endpoint, reserves), for the
    /// start-up check of the hard limit.
    pub base_fds: u64,
}

impl Default for FdGuard {
    fn default() -> Self {
        FdGuard {
            reserve_fds: 2,
            watch_for: Duration::from_secs(10),
            room_wait: Duration::from_millis(20),
            log_interval: Duration::from_secs(1),
            base_fds: 64,
        }
    }
}

impl FdGuard {
    /// The fds the configured limits can use at once: a client socket per
    /// stream, every backend connection, the base and every worker's reserve.
    pub fn fds_needed(&self, max_streams: u64, backend_connections: u64, workers: u64) -> u64 {
        max_streams
            .saturating_add(backend_connections)
            .saturating_add(self.base_fds)
            .saturating_add(workers.saturating_mul(self.reserve_fds as u64))
    }

    /// Whether a hard limit of `hard` fds (`None`: unlimited) falls short of
    /// [`FdGuard::fds_needed`]; the start-up warning names both.
    pub fn hard_limit_short(&self, hard: Option<u64>, needed: u64) -> bool {
        hard.is_some_and(|hard| hard < needed)
    }
}

/// What the client of a handoff taken with the reserve gets: the capacity
/// `503` with `Retry-After`. Out of fds is out of capacity; the client's
/// remedy, to retry shortly, is the same.
pub fn exhausted_response(retry_after_secs: u32) -> Bytes {
    Refusal::AtCapacity.response(retry_after_secs)
}

/// Why `accept` failed, as far as the accept loop cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AcceptError {
    /// EMFILE or ENFILE: no fd for the connection.
    OutOfFds,
    /// ENOBUFS or ENOMEM: the kernel is short of memory.
    OutOfMemory,
    /// Anything else (a connection reset before it was accepted, say).
    Other,
}

/// What the accept loop does after a failed accept.
///
/// Exhaustive on purpose: an accept loop that matches it fails to compile when a
/// new step appears, instead of silently ignoring it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptStep {
    /// Release the reserve and accept once more: that handoff is answered 503.
    UseReserve,
    /// Stop accepting for this long (the reserve is spent, or memory is short).
    Pause(Duration),
    /// Go on accepting.
    Continue,
}

/// The accept loop's next step after `error`, with `reserve_held` fds of the
/// reserve open. `pause` is the configured accept backoff.
pub fn after_accept_error(error: AcceptError, reserve_held: usize, pause: Duration) -> AcceptStep {
    match error {
        AcceptError::OutOfFds if reserve_held > 0 => AcceptStep::UseReserve,
        AcceptError::OutOfFds | AcceptError::OutOfMemory => AcceptStep::Pause(pause),
        AcceptError::Other => AcceptStep::Continue,
    }
}

/// After a failed accept with the reserve released: pause, so the loop does
/// not spin on a table that even the reserve could not make room in.
pub fn after_reserve_accept_failed(pause: Duration) -> AcceptStep {
    AcceptStep::Pause(pause)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> Option<Peer> {
        Some(Peer { pid: 42, uid, gid })
    }

    #[test]
    fn an_empty_policy_lets_anyone_hand_off() {
        let open = PeerPolicy::default();
        assert!(open.is_open());
        assert!(open.allows(peer(0, 0)));
        assert!(open.allows(peer(65_534, 65_534)));
        assert!(open.allows(None), "nothing to check against");
    }

    #[test]
    fn an_allowed_uid_or_gid_lets_a_peer_in_and_nothing_else_does() {
        let policy = PeerPolicy::new(vec![33], vec![997]);
        assert!(!policy.is_open());
        assert!(policy.allows(peer(33, 33)), "Apache's uid");
        assert!(policy.allows(peer(1000, 997)), "the socket group's gid");
        assert!(!policy.allows(peer(0, 0)), "root is not special");
        assert!(!policy.allows(peer(997, 33)), "a uid equal to an allowed gid is not allowed");
        assert!(!policy.allows(None), "unreadable credentials are refused");
        let uids_only = PeerPolicy::new(vec![0], Vec::new());
        assert!(uids_only.allows(peer(0, 5)));
        assert!(!uids_only.allows(peer(5, 0)), "an empty gid list allows no gid");
    }

    #[test]
    fn only_stream_sockets_are_served_and_each_kind_has_its_own_label() {
        let served: Vec<_> = FdKind::ALL.iter().filter(|kind| kind.is_served()).collect();
        assert_eq!(served, [&FdKind::StreamSocket]);
        let labels: std::collections::HashSet<_> = FdKind::ALL.iter().map(|kind| kind.label()).collect();
        assert_eq!(labels.len(), FdKind::ALL.len());
    }

    #[test]
    fn each_kind_is_logged_once() {
        let once = OncePerKind::default();
        assert!(once.first(FdKind::Pipe));
        assert!(!once.first(FdKind::Pipe));
        assert!(once.first(FdKind::DatagramSocket), "another kind is its own first");
        assert!(once.first(FdKind::Other));
        assert!(!once.first(FdKind::Other));
        assert!(!once.first(FdKind::DatagramSocket));
        assert!(once.first(FdKind::RegularFile));
    }

    #[test]
    fn the_log_limit_lets_one_line_a_second_and_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(1));
        let at = Duration::from_millis;
        assert_eq!(limit.check(at(5_000)), Some(0), "the first line goes out");
        assert_eq!(limit.check(at(5_001)), None);
        assert_eq!(limit.check(at(5_999)), None);
        assert_eq!(limit.check(at(6_000)), Some(2), "a second later, with the two held back");
        assert_eq!(limit.check(at(6_500)), None);
        assert_eq!(limit.check(at(60_000)), Some(1));
        assert_eq!(limit.check(at(61_000)), Some(0));
        let from_zero = LogLimit::new(Duration::from_secs(1));
        assert_eq!(from_zero.check(Duration::ZERO), Some(0), "a line at the very start");
        assert_eq!(from_zero.check(at(10)), None);
    }

    #[test]
    fn a_full_table_uses_the_reserve_and_pauses_only_without_one() {
        let pause = Duration::from_millis(100);
        assert_eq!(after_accept_error(AcceptError::OutOfFds, 2, pause), AcceptStep::UseReserve);
        assert_eq!(after_accept_error(AcceptError::OutOfFds, 0, pause), AcceptStep::Pause(pause));
        assert_eq!(after_accept_error(AcceptError::OutOfMemory, 2, pause), AcceptStep::Pause(pause));
        assert_eq!(after_accept_error(AcceptError::Other, 0, pause), AcceptStep::Continue);
        assert_eq!(after_reserve_accept_failed(pause), AcceptStep::Pause(pause));
    }

    #[test]
    fn the_hard_limit_must_hold_streams_backend_connections_and_the_base() {
        let guard = FdGuard::default();
        let needed = guard.fds_needed(50_000, 1024, 1);
        assert_eq!(needed, 50_000 + 1024 + 64 + 2);
        assert!(guard.hard_limit_short(Some(20_000), needed));
        assert!(!guard.hard_limit_short(Some(1 << 20), needed));
        assert!(!guard.hard_limit_short(None, needed), "unlimited is enough");
        assert_eq!(guard.fds_needed(u64::MAX, 1, 1), u64::MAX, "saturates");
    }

    #[test]
    fn the_reserve_answer_is_the_capacity_503_with_retry_after() {
        let text = String::from_utf8(exhausted_response(3).to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 "), "{text}");
        assert!(text.contains("\r\nRetry-After: 3\r\n"), "{text}");
        assert!(text.contains("over_capacity"), "{text}");
        assert_eq!(exhausted_response(3), Refusal::AtCapacity.response(3));
    }
}
