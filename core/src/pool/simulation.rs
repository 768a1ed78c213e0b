//! A simulated runtime driving a [`Pool`] from arbitrary bytes, for the randomized
//! test and the fuzz target (`simulate(start, data)` is the whole target).
//!
//! The bytes pick a configuration and then a sequence of things a runtime and a
//! backend can do: streams arrive, finish, get rejected (refused, turned away by
//! GOAWAY, not sent, or maybe processed); connections open, fail, change SETTINGS,
//! send GOAWAY, die; time passes. The simulation keeps its own model
//! of what the runtime was told and checks every command against it, then calls
//! [`Pool::check_invariants`] after every step. At the end the backend either
//! works or stays down while time runs on, and every stream must end.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{Command, ConnId, Event, PingConfig, Pool, PoolConfig, Rejection, StreamId};
use crate::stream::{BackendFailure, FailureKind};

const REJECTIONS: [Rejection; 4] =
    [Rejection::RefusedStream, Rejection::GoAway, Rejection::NotSent, Rejection::MaybeProcessed];

/// Kinds a transport may give a rejected stream's failure.
const REJECTION_KINDS: [FailureKind; 3] =
    [FailureKind::Unavailable, FailureKind::Reset, FailureKind::Protocol];

/// Rounds of the final settling phase; each ends a batch of streams or advances
/// time to the next deadline, so a correct pool settles in far fewer.
const SETTLE_ROUNDS: usize = 400;

/// Runs the script; `Err` names the first rule the pool broke.
pub fn simulate(start: Instant, script: &[u8]) -> Result<(), String> {
    let mut bytes = Bytes(script.iter());
    let config = PoolConfig {
        max_streams_per_connection: 1 + u32::from(bytes.next() % 4),
        max_connecting: 1 + usize::from(bytes.next() % 3),
        max_connections: 1 + usize::from(bytes.next() % 5),
        max_queued: usize::from(bytes.next() % 10),
        idle_timeout: Duration::from_secs(1 + u64::from(bytes.next() % 4)),
        connect_backoff: Duration::from_millis(100),
        max_connect_backoff: Duration::from_secs(1),
        max_connect_failures: 1 + u32::from(bytes.next() % 3),
        ping: ping_config(bytes.next()),
        ..PoolConfig::default()
    };
    let mut sim = Simulation::new(start, config);
    while let Some(op) = bytes.0.next() {
        sim.step(*op, &mut bytes)?;
    }
    let backend_works = script.first().is_some_and(|byte| byte % 2 == 0);
    sim.settle(backend_works)
}

/// Pings off for a third of the scripts; else an interval and a timeout of a
/// few seconds, so both race the idle timeout and the streams.
fn ping_config(choice: u8) -> Option<PingConfig> {
    (choice % 3 != 0).then(|| PingConfig {
        interval: Duration::from_millis(500 * (1 + u64::from(choice / 3 % 6))),
        timeout: Duration::from_millis(300 * (1 + u64::from(choice / 18 % 5))),
    })
}

/// The script's bytes; a script that runs out reads as zeros.
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        self.0.next().copied().unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Waiting,
    Running(ConnId),
    /// The pool owes it a `Fail` of this kind in answer to the event just sent: its
    /// connection closed under it, or it was rejected for good. `given`: exactly
    /// the failure the rejection carried ([`rejection_failure`]).
    Owed {
        kind: FailureKind,
        given: bool,
    },
}

#[derive(Debug, Default)]
struct ModelConn {
    ready: bool,
    draining: bool,
    peer_max_streams: Option<u32>,
    streams: BTreeSet<StreamId>,
    /// When the PING now out was sent.
    ping_sent: Option<Instant>,
}

struct Simulation {
    pool: Pool,
    config: PoolConfig,
    now: Instant,
    conns: BTreeMap<ConnId, ModelConn>,
    ever_opened: BTreeSet<ConnId>,
    streams: BTreeMap<StreamId, StreamState>,
    /// Rejected once (retryably), by this connection: retried at most once.
    rejected_by: BTreeMap<StreamId, ConnId>,
    next_stream: u64,
}

impl Simulation {
    fn new(start: Instant, config: PoolConfig) -> Simulation {
        Simulation {
            pool: Pool::new(config.clone()),
            config,
            now: start,
            conns: BTreeMap::new(),
            ever_opened: BTreeSet::new(),
            streams: BTreeMap::new(),
            rejected_by: BTreeMap::new(),
            next_stream: 0,
        }
    }

    fn step(&mut self, op: u8, bytes: &mut Bytes<'_>) -> Result<(), String> {
        match op % 13 {
            0 | 1 => {
                let stream = StreamId(self.next_stream);
                self.next_stream += 1;
                self.streams.insert(stream, StreamState::Waiting);
                self.send(Event::StreamRequested(stream))
            }
            2 => match pick(self.streams.keys(), bytes.next()) {
                Some(stream) => self.finish(stream),
                None => Ok(()),
            },
            3 => {
                let choice = bytes.next();
                let peer_max_streams = (choice % 4 != 0).then_some(u32::from(choice / 4 % 6));
                match pick(
                    self.conns.iter().filter(|(_, c)| !c.ready && !c.draining).map(|(id, _)| id),
                    choice,
                ) {
                    Some(conn) => {
                        let model = self.conn_mut(conn)?;
                        model.ready = true;
                        model.peer_max_streams = peer_max_streams;
                        self.send(Event::ConnectionReady { conn, peer_max_streams })
                    }
                    None => Ok(()),
                }
            }
            4 => match pick(
                self.conns.iter().filter(|(_, c)| !c.ready && !c.draining).map(|(id, _)| id),
                bytes.next(),
            ) {
                Some(conn) => {
                    self.conns.remove(&conn);
                    self.send(Event::ConnectionFailed { conn, reason: "connection refused".to_owned() })
                }
                None => Ok(()),
            },
            5 => {
                let choice = bytes.next();
                let peer_max_streams = (choice % 4 != 0).then_some(u32::from(choice / 4 % 6));
                match pick(self.conns.iter().filter(|(_, c)| c.ready).map(|(id, _)| id), choice) {
                    Some(conn) => {
                        self.conn_mut(conn)?.peer_max_streams = peer_max_streams;
                        self.send(Event::PeerSettings { conn, peer_max_streams })
                    }
                    None => Ok(()),
                }
            }
            6 => match pick(self.conns.keys(), bytes.next()) {
                Some(conn) => {
                    self.conn_mut(conn)?.draining = true;
                    self.send(Event::GoAway(conn))
                }
                None => Ok(()),
            },
            7 => match pick(self.conns.keys(), bytes.next()) {
                Some(conn) => self.close(conn),
                None => Ok(()),
            },
            8 => {
                let running =
                    self.streams.iter().filter(|(_, state)| matches!(state, StreamState::Running(_)));
                match pick(running.map(|(id, _)| id), bytes.next()) {
                    // The kind byte is read only when a stream runs, so scripts
                    // recorded before rejections had kinds keep their meaning.
                    Some(stream) => self.reject(stream, bytes.next()),
                    None => Ok(()),
                }
            }
            9 => {
                self.now += Duration::from_millis(u64::from(bytes.next()) * 20);
                self.pool.handle_timeout(self.now);
                self.drain()
            }
            10 => self.jump_to_deadline().map(|_| ()),
            11 => {
                let choice = bytes.next();
                let pinged = self.conns.iter().filter(|(_, c)| c.ping_sent.is_some()).map(|(id, _)| id);
                match pick(pinged, choice) {
                    Some(conn) => self.pong(conn),
                    // An answer nobody waits for changes nothing.
                    None => {
                        let before = self.pool.stats();
                        self.send(Event::Pong(ConnId(u64::MAX - u64::from(choice))))?;
                        if self.pool.stats() != before {
                            return Err("a PONG nobody waited for changed the pool".to_owned());
                        }
                        Ok(())
                    }
                }
            }
            _ => self.send_nonsense(bytes.next()),
        }
    }

    /// Events a confused runtime might send: all must leave the pool as it was
    /// (a rejection of an unknown stream is answered with its failure, no more).
    /// Or a rejection of a stream still waiting, which must fail it.
    fn send_nonsense(&mut self, choice: u8) -> Result<(), String> {
        let unknown_stream = StreamId(self.next_stream + 1000);
        let unknown_conn = ConnId(u64::MAX - u64::from(choice));
        if choice % 6 == 5 {
            let waiting = self.streams.iter().filter(|(_, state)| **state == StreamState::Waiting);
            if let Some(stream) = pick(waiting.map(|(id, _)| id), choice) {
                return self.reject(stream, choice / 6);
            }
        }
        let event = match choice % 6 {
            0 => Event::StreamFinished(unknown_stream),
            1 => {
                let (rejection, failure) = rejection_of(unknown_stream, choice / 6);
                self.streams.insert(unknown_stream, StreamState::Owed { kind: failure.kind, given: true });
                Event::StreamRejected { stream: unknown_stream, rejection, failure }
            }
            2 => Event::ConnectionReady { conn: unknown_conn, peer_max_streams: None },
            3 => Event::ConnectionClosed { conn: unknown_conn, reason: "unknown".to_owned() },
            4 => match pick(self.streams.keys(), choice) {
                Some(stream) => Event::StreamRequested(stream),
                None => Event::GoAway(unknown_conn),
            },
            _ => Event::PeerSettings { conn: unknown_conn, peer_max_streams: Some(0) },
        };
        let before = self.pool.stats();
        self.send(event)?;
        if self.pool.stats() != before {
            return Err("an event naming nothing known changed the pool".to_owned());
        }
        Ok(())
    }

    fn finish(&mut self, stream: StreamId) -> Result<(), String> {
        if let Some(StreamState::Running(conn)) = self.streams.remove(&stream) {
            self.conn_mut(conn)?.streams.remove(&stream);
        }
        self.send(Event::StreamFinished(stream))
    }

    fn pong(&mut self, conn: ConnId) -> Result<(), String> {
        self.conn_mut(conn)?.ping_sent = None;
        self.send(Event::Pong(conn))
    }

    /// Whether the PING out on `conn` has gone unanswered past its timeout.
    fn ping_overdue(&self, conn: ConnId) -> bool {
        let sent = self.conns.get(&conn).and_then(|model| model.ping_sent);
        match (sent, self.config.ping) {
            (Some(sent), Some(ping)) => self.now >= sent + ping.timeout,
            _ => false,
        }
    }

    fn close(&mut self, conn: ConnId) -> Result<(), String> {
        if let Some(model) = self.conns.remove(&conn) {
            for stream in model.streams {
                self.streams.insert(stream, StreamState::Owed { kind: FailureKind::Reset, given: false });
            }
        }
        self.send(Event::ConnectionClosed { conn, reason: "connection reset".to_owned() })
    }

    /// Reports `stream` rejected, the rejection and its failure picked by `choice`,
    /// and records what the pool owes it: a retry (the first retryable rejection of
    /// a running stream) or a `Fail`.
    fn reject(&mut self, stream: StreamId, choice: u8) -> Result<(), String> {
        let (rejection, failure) = rejection_of(stream, choice);
        let given = StreamState::Owed { kind: failure.kind, given: true };
        let next = match self.streams.get(&stream) {
            Some(&StreamState::Running(conn)) => {
                let model = self.conn_mut(conn)?;
                model.streams.remove(&stream);
                if matches!(rejection, Rejection::GoAway | Rejection::NotSent) {
                    // The server sent GOAWAY, or the connection failed: it takes
                    // nothing new, and closes once its last stream is gone.
                    model.draining = true;
                }
                // The rule stated again, not `is_retryable`, so the model checks it.
                if rejection == Rejection::MaybeProcessed {
                    given
                } else if self.rejected_by.insert(stream, conn).is_some() {
                    StreamState::Owed { kind: FailureKind::Unavailable, given: false }
                } else {
                    StreamState::Waiting
                }
            }
            // Not running: nothing to retry, but an answer is owed.
            _ => given,
        };
        self.streams.insert(stream, next);
        self.send(Event::StreamRejected { stream, rejection, failure })
    }

    /// Moves time to the pool's next deadline and handles it; false if none.
    fn jump_to_deadline(&mut self) -> Result<bool, String> {
        let Some(deadline) = self.pool.poll_timeout() else {
            return Ok(false);
        };
        self.now = self.now.max(deadline);
        self.pool.handle_timeout(self.now);
        self.drain()?;
        Ok(true)
    }

    fn send(&mut self, event: Event) -> Result<(), String> {
        self.pool.handle_event(self.now, event);
        self.drain()
    }

    /// Applies every command to the model, checking it was allowed, then checks
    /// the pool against the model and against itself.
    fn drain(&mut self) -> Result<(), String> {
        while let Some(command) = self.pool.poll_command() {
            self.apply(&command).map_err(|error| format!("{command:?}: {error}"))?;
        }
        if let Some((stream, owed)) =
            self.streams.iter().find(|(_, state)| matches!(state, StreamState::Owed { .. }))
        {
            return Err(format!("{stream:?} is owed a failure ({owed:?}) and did not get it"));
        }
        self.pool.check_invariants()?;
        let stats = self.pool.stats();
        let waiting = self.streams.values().filter(|state| **state == StreamState::Waiting).count();
        let running = self.streams.values().filter(|state| matches!(state, StreamState::Running(_))).count();
        let connecting = self.conns.values().filter(|c| !c.ready && !c.draining).count();
        if (stats.queued, stats.active_streams) != (waiting, running) {
            return Err(format!("pool reports {stats:?}; runtime sees {waiting} waiting, {running} running"));
        }
        if (stats.open + stats.connecting, stats.connecting) != (self.conns.len(), connecting) {
            return Err(format!("pool reports {stats:?}; runtime sees {} connections", self.conns.len()));
        }
        if let Some(deadline) = self.pool.poll_timeout() {
            if deadline <= self.now {
                return Err(format!("deadline {:?} ago is still pending: a spin", self.now - deadline));
            }
        }
        Ok(())
    }

    fn apply(&mut self, command: &Command) -> Result<(), String> {
        match *command {
            Command::Open(conn) => {
                if !self.ever_opened.insert(conn) {
                    return Err("connection id reused".to_owned());
                }
                // Only for streams the connections already opening cannot take.
                let waiting = self.streams.values().filter(|state| **state == StreamState::Waiting).count();
                let opening = self.conns.values().filter(|c| !c.ready && !c.draining).count();
                let expected = opening * self.config.max_streams_per_connection as usize;
                if waiting <= expected {
                    return Err(format!(
                        "{waiting} streams wait and {opening} connections are opening for them"
                    ));
                }
                self.conns.insert(conn, ModelConn::default());
                let connecting = self.conns.values().filter(|c| !c.ready && !c.draining).count();
                if connecting > self.config.max_connecting || self.conns.len() > self.config.max_connections {
                    return Err(format!(
                        "{connecting} connecting, {} in all: over the limits",
                        self.conns.len()
                    ));
                }
            }
            Command::Assign { stream, conn } => {
                if self.streams.get(&stream) != Some(&StreamState::Waiting) {
                    return Err(format!("stream is {:?}", self.streams.get(&stream)));
                }
                let expected = match self.rejected_by.get(&stream) {
                    Some(&rejected_by) => self
                        .best_with_room(Some(rejected_by))
                        .or(self.has_room(rejected_by).then_some(rejected_by)),
                    None => {
                        let first_waiting = self.streams.iter().find(|(id, state)| {
                            **state == StreamState::Waiting && !self.rejected_by.contains_key(id)
                        });
                        if first_waiting.map(|(id, _)| *id) != Some(stream) {
                            return Err(format!("not first in line: {first_waiting:?} waits longer"));
                        }
                        self.best_with_room(None)
                    }
                };
                if expected != Some(conn) {
                    return Err(format!("expected the busiest connection with room, {expected:?}"));
                }
                self.conn_mut(conn)?.streams.insert(stream);
                self.streams.insert(stream, StreamState::Running(conn));
            }
            Command::Fail { stream, ref failure } => {
                let state = self.streams.get(&stream).copied();
                let answered = match state {
                    Some(StreamState::Owed { kind, given: true }) => {
                        *failure == rejection_failure(stream, kind)
                    }
                    Some(StreamState::Owed { kind, given: false }) => failure.kind == kind,
                    // A retried stream is never failed as overloaded: it does not
                    // count against the queue bound.
                    Some(StreamState::Waiting) if self.rejected_by.contains_key(&stream) => {
                        failure.kind == FailureKind::Unavailable
                    }
                    Some(StreamState::Waiting) => {
                        matches!(failure.kind, FailureKind::Overloaded | FailureKind::Unavailable)
                    }
                    // Its connection did not answer a PING in time.
                    Some(StreamState::Running(conn)) if self.ping_overdue(conn) => {
                        self.conn_mut(conn)?.streams.remove(&stream);
                        failure.kind == FailureKind::Reset
                    }
                    other => return Err(format!("stream is {other:?}")),
                };
                if !answered || failure.message.is_empty() {
                    return Err(format!("not the failure a stream {state:?} is owed"));
                }
                self.streams.remove(&stream);
            }
            Command::Close(conn) => match self.conns.remove(&conn) {
                Some(model) if model.streams.is_empty() => {}
                Some(model) => return Err(format!("closed with {} streams running", model.streams.len())),
                None => return Err("unknown connection".to_owned()),
            },
            Command::Ping(conn) => {
                if self.config.ping.is_none() {
                    return Err("a PING with pings off".to_owned());
                }
                let now = self.now;
                let model = self.conn_mut(conn)?;
                if !model.ready || model.draining || !model.streams.is_empty() || model.ping_sent.is_some() {
                    return Err(format!("pinged a connection that is not idle or already pinged: {model:?}"));
                }
                model.ping_sent = Some(now);
            }
            Command::Abort(conn) => {
                if !self.ping_overdue(conn) {
                    return Err("aborted a connection whose PING was not overdue".to_owned());
                }
                match self.conns.remove(&conn) {
                    Some(model) if model.streams.is_empty() => {}
                    Some(model) => {
                        return Err(format!("aborted with {} streams not failed", model.streams.len()))
                    }
                    None => return Err("unknown connection".to_owned()),
                }
            }
        }
        Ok(())
    }

    fn has_room(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|model| {
            let per = self.config.max_streams_per_connection;
            let capacity = model.peer_max_streams.map_or(per, |peer| peer.min(per));
            model.ready && !model.draining && (model.streams.len() as u32) < capacity
        })
    }

    /// The connection the pool must pick: most streams, then lowest id.
    fn best_with_room(&self, except: Option<ConnId>) -> Option<ConnId> {
        self.conns
            .iter()
            .filter(|(id, _)| Some(**id) != except && self.has_room(**id))
            .min_by_key(|(id, model)| (std::cmp::Reverse(model.streams.len()), **id))
            .map(|(id, _)| *id)
    }

    fn conn_mut(&mut self, conn: ConnId) -> Result<&mut ModelConn, String> {
        self.conns.get_mut(&conn).ok_or_else(|| format!("{conn:?} unknown to the runtime"))
    }

    /// The backend either works or stays down; running streams finish and time
    /// moves to each deadline. Every stream must end.
    fn settle(&mut self, backend_works: bool) -> Result<(), String> {
        for _ in 0..SETTLE_ROUNDS {
            if self.streams.is_empty() {
                return Ok(());
            }
            let connecting: Vec<ConnId> =
                self.conns.iter().filter(|(_, c)| !c.ready && !c.draining).map(|(id, _)| *id).collect();
            if backend_works {
                let pinged: Vec<ConnId> =
                    self.conns.iter().filter(|(_, c)| c.ping_sent.is_some()).map(|(id, _)| *id).collect();
                for conn in pinged {
                    self.pong(conn)?;
                }
            }
            for conn in connecting {
                if backend_works {
                    self.conn_mut(conn)?.ready = true;
                    self.send(Event::ConnectionReady { conn, peer_max_streams: None })?;
                } else {
                    self.conns.remove(&conn);
                    self.send(Event::ConnectionFailed { conn, reason: "connection refused".to_owned() })?;
                }
            }
            let running: Vec<StreamId> = self
                .streams
                .iter()
                .filter(|(_, state)| matches!(state, StreamState::Running(_)))
                .map(|(id, _)| *id)
                .collect();
            for stream in running {
                self.finish(stream)?;
            }
            if self.streams.values().any(|state| *state == StreamState::Waiting) {
                self.jump_to_deadline()?;
            }
        }
        Err(format!("{} streams still unfinished after settling", self.streams.len()))
    }
}

fn pick<'a, T: Copy + 'a>(items: impl Iterator<Item = &'a T>, choice: u8) -> Option<T> {
    let items: Vec<T> = items.copied().collect();
    if items.is_empty() {
        return None;
    }
    items.get(usize::from(choice) % items.len()).copied()
}

/// The rejection `choice` picks, and the failure the transport reports with it.
fn rejection_of(stream: StreamId, choice: u8) -> (Rejection, BackendFailure) {
    let rejection = REJECTIONS[usize::from(choice) % REJECTIONS.len()];
    let kind = REJECTION_KINDS[usize::from(choice) / REJECTIONS.len() % REJECTION_KINDS.len()];
    (rejection, rejection_failure(stream, kind))
}

fn rejection_failure(stream: StreamId, kind: FailureKind) -> BackendFailure {
    BackendFailure { kind, message: format!("the transport failed {stream:?}") }
}
