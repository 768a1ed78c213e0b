//! handoff-floor: the least work the mock workload allows, as a physical limit to
//! compare the daemons against.
//!
//! It takes handoffs on the daemons' Unix socket and writes each client the same
//! bytes on the same schedule as a daemon's mock backend (the head at once, event
//! i at (i+1) × delay, `[DONE]` with the last event, then shutdown and close), and
//! nothing more: one thread, one epoll loop, one binary heap of deadlines over a
//! slab of streams, pre-built event bytes, no parsing, no allocation per event, no
//! async runtime. See bench/README.md ("The floor") for what it leaves out.

mod script;
mod sys;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use handoff_bench::load::DEFAULT_DATA;
use handoff_core::limits::{self, Snapshot};
use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
use rustix::event::Timespec;
use rustix::io::Errno;
use rustix::net::{SendFlags, SocketFlags};

use script::{Piece, Script, EVENT0_ROOM, EVENTS};

#[derive(Debug, Parser)]
#[command(
    name = "handoff-floor",
    about = "The mock workload's floor: a daemon's mock-backend bytes and schedule with the least work"
)]
struct Args {
    /// Unix socket path (SOCK_SEQPACKET).
    #[arg(short = 's', long, default_value = "/run/streaming-daemon.sock")]
    socket: PathBuf,
    /// Socket permissions, octal.
    #[arg(short = 'm', long, default_value = "0660", value_parser = parse_mode)]
    mode: u32,
    /// Milliseconds between mock events.
    #[arg(short = 'd', long, default_value_t = 50)]
    delay: u64,
    /// Backend: only the mock exists here (accepted for the daemons' command line).
    #[arg(short = 'b', long, default_value = "mock", value_parser = ["mock"])]
    backend: String,
    /// Quiet; print the daemons' summary on exit.
    #[arg(long)]
    benchmark: bool,
    /// The handoff data whose user id and prompt events 1 and 2 echo for every
    /// stream (the floor does not read the handoffs' own data).
    #[arg(long, value_name = "JSON", default_value = DEFAULT_DATA)]
    echo_data: String,
}

fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if mode <= 0o7777 => Ok(mode),
        _ => Err(format!("{text:?} is not an octal file mode")),
    }
}

/// epoll data of the listening socket and of the signal socket; every other
/// registration is a slot: `generation << 32 | index`.
const LISTENER: u64 = u64::MAX;
const SIGNALS: u64 = u64::MAX - 1;
/// How long an accepted connection may take to send its handoff (the module sends
/// at once; its own send timeout is 200 ms).
const RECEIVE_PATIENCE: Duration = Duration::from_secs(10);
/// Accepts per listener wake-up, so a flood of handoffs cannot starve due events.
const ACCEPT_BURST: usize = 256;
/// Pause before accepting again when out of fds (the listener stays readable).
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

fn main() -> ExitCode {
    let args = Args::parse();
    match serve(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("handoff-floor: {error}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args) -> Result<(), String> {
    sys::raise_fd_limit();
    let script = Script::new(&args.echo_data)?;
    if !script.event0_fits() {
        return Err("core's mock event 0 no longer fits the floor's stack buffer".into());
    }
    let signals = sys::signal_socket()?;
    let epoll = epoll::create(CreateFlags::CLOEXEC).map_err(|e| format!("epoll_create: {e}"))?;
    epoll::add(&epoll, &signals, EventData::new_u64(SIGNALS), EventFlags::IN)
        .map_err(|e| format!("watching the signal socket: {e}"))?;
    let listener = sys::bind(&args.socket, args.mode)?;
    let mut floor = Floor {
        epoll,
        listener: None,
        socket: args.socket.clone(),
        signals,
        script,
        delay: args.delay.saturating_mul(1_000_000),
        epoch: Instant::now(),
        slots: Vec::new(),
        free: Vec::new(),
        timers: BinaryHeap::new(),
        streams: 0,
        receiving: 0,
        accept_paused_until: None,
        counts: Snapshot::default(),
        waited_writes: 0,
        accept_pauses: 0,
        stopping: false,
        exit_now: false,
    };
    let watched = epoll::add(&floor.epoll, &listener, EventData::new_u64(LISTENER), EventFlags::IN);
    floor.listener = Some(listener);
    if !args.benchmark {
        eprintln!(
            "handoff-floor: listening on {} (mock, {} ms between events)",
            args.socket.display(),
            args.delay
        );
    }
    let result = watched.map_err(|e| format!("watching the listener: {e}")).and_then(|()| floor.run());
    if floor.listener.take().is_some() {
        let _ = std::fs::remove_file(&floor.socket);
    }
    floor.counts.active = floor.streams;
    if args.benchmark {
        print!("{}", limits::summary(&floor.counts));
    }
    eprintln!(
        "handoff-floor: {} streams, {} writes waited for EPOLLOUT, {} accept pauses (out of fds)",
        floor.counts.started, floor.waited_writes, floor.accept_pauses
    );
    result
}

/// One slab entry: a handoff connection waiting for its message, or a stream.
#[derive(Debug)]
struct Slot {
    /// Bumped whenever the slot changes hands, so stale timers and events miss.
    generation: u32,
    state: State,
}

#[derive(Debug)]
enum State {
    Free,
    Receiving(OwnedFd),
    Streaming(Stream),
}

#[derive(Debug)]
struct Stream {
    client: OwnedFd,
    /// The running handoff number event 0 names (1 for the first), as the daemons count.
    number: u64,
    /// When the handoff was taken, in ns since the floor's epoch.
    start: u64,
    /// Events due so far: all bytes up to [`Script::due_end`] of this are owed.
    due: u8,
    /// Bytes of the stream written so far.
    written: u32,
    /// EPOLLOUT is armed: the client took less than was due.
    waiting: bool,
    /// The fd is in the epoll set (added at its first blocked write only).
    registered: bool,
}

/// What a flush left a stream in.
enum Flushed {
    /// Everything due is written; more events are to come.
    Idle,
    Blocked,
    Finished,
    Gone,
}

struct Floor {
    epoll: OwnedFd,
    listener: Option<OwnedFd>,
    socket: PathBuf,
    signals: OwnedFd,
    script: Script,
    /// Between events, in ns.
    delay: u64,
    epoch: Instant,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// (deadline in ns since the epoch, slot, generation), earliest first.
    timers: BinaryHeap<Reverse<(u64, u32, u32)>>,
    streams: u64,
    receiving: u64,
    accept_paused_until: Option<u64>,
    counts: Snapshot,
    waited_writes: u64,
    accept_pauses: u64,
    stopping: bool,
    exit_now: bool,
}

impl Floor {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn run(&mut self) -> Result<(), String> {
        let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
        loop {
            let now = self.now();
            self.fire_timers(now);
            self.resume_accepting(now);
            if self.exit_now || (self.stopping && self.streams + self.receiving == 0) {
                return Ok(());
            }
            let next = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let next = match (next, self.accept_paused_until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let timeout = next.map(|at| {
                let wait = at.saturating_sub(now);
                // Below 2^63 s: the casts cannot wrap.
                Timespec { tv_sec: (wait / 1_000_000_000) as i64, tv_nsec: (wait % 1_000_000_000) as i64 }
            });
            events.clear();
            match epoll::wait(&self.epoll, rustix::buffer::spare_capacity(&mut events), timeout.as_ref()) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(error) => return Err(format!("epoll_wait: {error}")),
            }
            let now = self.now();
            for event in &events {
                // Copied out: the struct is packed.
                let data = event.data;
                match data.u64() {
                    LISTENER => self.accept_burst(now),
                    SIGNALS => self.on_signals(),
                    id => self.on_ready(id, now),
                }
            }
        }
    }

    fn fire_timers(&mut self, now: u64) {
        while let Some(&Reverse((at, slot, generation))) = self.timers.peek() {
            if at > now {
                return;
            }
            self.timers.pop();
            self.on_timer(slot, generation, now);
        }
    }

    fn on_timer(&mut self, slot: u32, generation: u32, now: u64) {
        let Some(entry) = self.slots.get_mut(slot as usize) else { return };
        if entry.generation != generation {
            return;
        }
        match &mut entry.state {
            State::Free => {}
            State::Receiving(_) => {
                // The handoff never came.
                self.receiving -= 1;
                self.release(slot);
            }
            State::Streaming(stream) => {
                // Due times come from the plan, not from this wake-up: a late wake
                // catches up in one write, as the daemons' mock does.
                let due_at =
                    |due: u8| stream.start.saturating_add(self.delay.saturating_mul(u64::from(due) + 1));
                while stream.due < EVENTS && due_at(stream.due) <= now {
                    stream.due += 1;
                }
                if stream.due < EVENTS {
                    self.timers.push(Reverse((due_at(stream.due), slot, generation)));
                }
                if !stream.waiting {
                    self.flush(slot);
                }
            }
        }
    }

    /// Writes what is due and not yet written, and acts on how that went.
    fn flush(&mut self, slot: u32) {
        let Some(Slot { state: State::Streaming(stream), generation }) = self.slots.get_mut(slot as usize)
        else {
            return;
        };
        let end = self.script.due_end(stream.number, stream.due);
        let flushed = loop {
            if stream.written >= end {
                break if stream.due >= EVENTS { Flushed::Finished } else { Flushed::Idle };
            }
            let mut rendered = [0u8; EVENT0_ROOM];
            let bytes = match self.script.piece(stream.number, stream.written) {
                Piece::Static(bytes) => bytes,
                Piece::Event0 { number, from } => {
                    self.script.event0(number, &mut rendered).get(from..).unwrap_or_default()
                }
            };
            let owed = (end - stream.written) as usize;
            let bytes = bytes.get(..owed).unwrap_or(bytes);
            if bytes.is_empty() {
                // Cannot happen (due_end never passes the script's end); never spin.
                break Flushed::Gone;
            }
            match rustix::net::send(&stream.client, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
                Ok(0) => break Flushed::Gone,
                Ok(n) => {
                    // At most the piece's length, which is below 4 GiB.
                    stream.written += n as u32;
                    self.counts.bytes_sent += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => break Flushed::Blocked,
                Err(_) => break Flushed::Gone,
            }
        };
        match flushed {
            Flushed::Idle => {}
            Flushed::Blocked => {
                let data = EventData::new_u64(u64::from(*generation) << 32 | u64::from(slot));
                let interest = EventFlags::OUT | EventFlags::ONESHOT;
                let armed = if stream.registered {
                    epoll::modify(&self.epoll, &stream.client, data, interest)
                } else {
                    epoll::add(&self.epoll, &stream.client, data, interest)
                };
                if armed.is_ok() {
                    stream.registered = true;
                    stream.waiting = true;
                    self.waited_writes += 1;
                } else {
                    self.end_stream(slot, Flushed::Gone);
                }
            }
            done => self.end_stream(slot, done),
        }
    }

    fn end_stream(&mut self, slot: u32, how: Flushed) {
        if let Some(Slot { state: State::Streaming(stream), .. }) = self.slots.get(slot as usize) {
            match how {
                Flushed::Finished => {
                    let _ = rustix::net::shutdown(&stream.client, rustix::net::Shutdown::Write);
                    self.counts.completed += 1;
                }
                _ => self.counts.client_gone += 1,
            }
            self.streams -= 1;
            // Closing the fd also takes it out of the epoll set.
            self.release(slot);
        }
    }

    /// A registered fd is ready: a stream's EPOLLOUT or a handoff's message.
    fn on_ready(&mut self, id: u64, now: u64) {
        let (generation, slot) = ((id >> 32) as u32, id as u32);
        let Some(entry) = self.slots.get_mut(slot as usize) else { return };
        if entry.generation != generation {
            return;
        }
        match &mut entry.state {
            State::Free => {}
            State::Streaming(stream) => {
                if std::mem::take(&mut stream.waiting) {
                    self.flush(slot);
                }
            }
            State::Receiving(conn) => match sys::receive(conn.as_fd()) {
                Err(Errno::AGAIN | Errno::INTR) => {}
                received => {
                    self.receiving -= 1;
                    self.release(slot);
                    if let Ok(sys::Received::Client(client)) = received {
                        self.start_stream(client, now);
                    }
                }
            },
        }
    }

    fn accept_burst(&mut self, now: u64) {
        for _ in 0..ACCEPT_BURST {
            let Some(listener) = &self.listener else { return };
            match rustix::net::accept_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
                Ok(conn) => self.on_connection(conn, now),
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM) => {
                    // The listener stays readable: stop watching it for a moment
                    // instead of spinning on it.
                    let _ = epoll::modify(
                        &self.epoll,
                        listener,
                        EventData::new_u64(LISTENER),
                        EventFlags::empty(),
                    );
                    self.accept_paused_until = Some(now.saturating_add(ACCEPT_PAUSE.as_nanos() as u64));
                    self.accept_pauses += 1;
                    return;
                }
                Err(error) => {
                    eprintln!("handoff-floor: accept: {error}");
                    return;
                }
            }
        }
    }

    fn resume_accepting(&mut self, now: u64) {
        if self.accept_paused_until.is_some_and(|at| at <= now) {
            self.accept_paused_until = None;
            if let Some(listener) = &self.listener {
                let _ = epoll::modify(&self.epoll, listener, EventData::new_u64(LISTENER), EventFlags::IN);
            }
        }
    }

    /// An accepted handoff connection: its message is usually there already.
    fn on_connection(&mut self, conn: OwnedFd, now: u64) {
        match sys::receive(conn.as_fd()) {
            Ok(sys::Received::Client(client)) => {
                drop(conn);
                self.start_stream(client, now);
            }
            Err(Errno::AGAIN | Errno::INTR) => {
                let (slot, generation) = self.occupy(State::Receiving(conn));
                let Some(Slot { state: State::Receiving(conn), .. }) = self.slots.get(slot as usize) else {
                    return;
                };
                let data = EventData::new_u64(u64::from(generation) << 32 | u64::from(slot));
                if epoll::add(&self.epoll, conn, data, EventFlags::IN).is_err() {
                    self.release(slot);
                    return;
                }
                self.receiving += 1;
                let deadline = now.saturating_add(RECEIVE_PATIENCE.as_nanos() as u64);
                self.timers.push(Reverse((deadline, slot, generation)));
            }
            // No fd, the peer closed, or an error: nothing to serve.
            Ok(sys::Received::Nothing) | Err(_) => {}
        }
    }

    fn start_stream(&mut self, client: OwnedFd, now: u64) {
        self.counts.started += 1;
        let number = self.counts.started;
        self.streams += 1;
        self.counts.peak_concurrent = self.counts.peak_concurrent.max(self.streams);
        let stream =
            Stream { client, number, start: now, due: 0, written: 0, waiting: false, registered: false };
        let (slot, generation) = self.occupy(State::Streaming(stream));
        self.timers.push(Reverse((now.saturating_add(self.delay), slot, generation)));
        // The head is due at once.
        self.flush(slot);
    }

    fn on_signals(&mut self) {
        for _ in 0..sys::take_signals(self.signals.as_fd()) {
            if self.stopping {
                // A second signal: stop waiting for the running streams.
                self.exit_now = true;
            } else {
                self.stopping = true;
                self.accept_paused_until = None;
                if let Some(listener) = self.listener.take() {
                    let _ = epoll::delete(&self.epoll, &listener);
                    let _ = std::fs::remove_file(&self.socket);
                }
            }
        }
    }

    /// Puts `state` in a free slot (reused before the slab grows).
    fn occupy(&mut self, state: State) -> (u32, u32) {
        if let Some(slot) = self.free.pop() {
            if let Some(entry) = self.slots.get_mut(slot as usize) {
                entry.state = state;
                return (slot, entry.generation);
            }
        }
        // Slots are counted in u32 (epoll data and timers); an fd each bounds them far below.
        let slot = self.slots.len() as u32;
        self.slots.push(Slot { generation: 0, state });
        (slot, 0)
    }

    /// Frees a slot, closing its fd.
    fn release(&mut self, slot: u32) {
        if let Some(entry) = self.slots.get_mut(slot as usize) {
            entry.state = State::Free;
            entry.generation = entry.generation.wrapping_add(1);
            self.free.push(slot);
        }
    }
}
