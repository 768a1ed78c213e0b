//! One handoff from start to end of response, as the module and a browser see it.

use std::cell::RefCell;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::{timeout_at, Instant};

use super::client::{ClientPairs, ClientSocket};
use super::handoff::{self, ConnectPolicy, HandoffError};
use super::report::FailureClass;
use super::response::ResponseScanner;

/// Bytes taken per read. Shared by every stream on a thread: a stream holds no buffer
/// between reads, only its scanner's few bytes.
const READ_BUF_BYTES: usize = 16 * 1024;

thread_local! {
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUF_BYTES].into_boxed_slice());
}

/// What every stream of a run shares.
#[derive(Debug)]
pub struct StreamContext {
    pub socket: PathBuf,
    pub data: Vec<u8>,
    pub policy: ConnectPolicy,
    pub send_timeout: Duration,
    pub timeout: Duration,
    pub clients: ClientPairs,
    pub live: LiveCounters,
}

/// Counters the progress line reads while streams run.
#[derive(Debug, Default)]
pub struct LiveCounters {
    pub started: AtomicU64,
    /// Streams handed off whose response has not ended.
    pub open: AtomicU64,
    pub peak_open: AtomicU64,
    pub done: AtomicU64,
    pub failed: AtomicU64,
}

/// Marks a stream open for as long as it lives.
struct OpenStream<'a>(&'a LiveCounters);

impl<'a> OpenStream<'a> {
    fn new(live: &'a LiveCounters) -> Self {
        let open = live.open.fetch_add(1, Ordering::Relaxed) + 1;
        live.peak_open.fetch_max(open, Ordering::Relaxed);
        Self(live)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How one stream went. Times after the handoff count from the moment `sendmsg` returned.
#[derive(Debug, Default)]
pub struct StreamRecord {
    /// `None` when the stream succeeded.
    pub failure: Option<(FailureClass, String)>,
    /// Connect start to `sendmsg` done.
    pub handoff: Option<Duration>,
    pub first_byte: Option<Duration>,
    pub first_event: Option<Duration>,
    /// To EOF of a successful stream.
    pub duration: Option<Duration>,
    pub status: Option<u16>,
    pub events: u64,
    pub bytes: u64,
}

impl StreamRecord {
    fn failed(mut self, class: FailureClass, detail: impl std::fmt::Display) -> Self {
        self.failure = Some((class, detail.to_string()));
        self
    }
}

/// Runs one handoff; every step ends by `timeout` after the start.
pub async fn run(context: &StreamContext) -> StreamRecord {
    let deadline = Instant::now() + context.timeout;
    let record = StreamRecord::default();
    let pair = match timeout_at(deadline, context.clients.open()).await {
        Err(_elapsed) => {
            return record.failed(FailureClass::Timeout, "timed out opening the client connection")
        }
        Ok(Err(error)) => return record.failed(FailureClass::Client, error),
        Ok(Ok(pair)) => pair,
    };
    let handoff_start = Instant::now();
    let socket = match timeout_at(deadline, handoff::connect(&context.socket, context.policy)).await {
        Err(_elapsed) => return record.failed(FailureClass::Timeout, "timed out connecting to the daemon"),
        // Out of fds on our side says nothing about the daemon.
        Ok(Err(error @ (HandoffError::Socket(_) | HandoffError::Register(_)))) => {
            return record.failed(FailureClass::Client, error)
        }
        Ok(Err(error)) => return record.failed(FailureClass::Connect, error),
        Ok(Ok(socket)) => socket,
    };
    let sending = handoff::send(
        &socket,
        &context.data,
        std::os::fd::AsFd::as_fd(&pair.server),
        context.send_timeout,
        context.policy.socket_type,
    );
    match timeout_at(deadline, sending).await {
        Err(_elapsed) => return record.failed(FailureClass::Timeout, "timed out sending the handoff"),
        Ok(Err(error)) => return record.failed(FailureClass::Send, error),
        Ok(Ok(())) => {}
    }
    let sent = Instant::now();
    // The daemon owns the connection now: the module closes both of its descriptors.
    drop(socket);
    drop(pair.server);
    let _open = OpenStream::new(&context.live);
    let record = StreamRecord { handoff: Some(sent - handoff_start), ..record };
    read_response(&pair.client, deadline, sent, record).await
}

/// How a read of the response ended.
enum ReadEnd {
    Eof,
    Error(io::Error),
    TimedOut,
    Malformed(String),
}

async fn read_response(
    client: &ClientSocket,
    deadline: Instant,
    sent: Instant,
    mut record: StreamRecord,
) -> StreamRecord {
    let mut scanner = ResponseScanner::new();
    let end = loop {
        match timeout_at(deadline, client.readable()).await {
            Err(_elapsed) => break ReadEnd::TimedOut,
            Ok(Err(error)) => break ReadEnd::Error(error),
            Ok(Ok(())) => {}
        }
        let read = READ_BUF.with_borrow_mut(|buf| match client.try_read(buf) {
            Ok(0) => Some(Ok(0)),
            Ok(n) => Some(
                scanner.handle_bytes(buf.get(..n).unwrap_or_default()).map(|()| n).map_err(ReadFailure::from),
            ),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                None
            }
            Err(error) => Some(Err(error.into())),
        });
        let now = Instant::now();
        match read {
            None => continue,
            Some(Ok(0)) => break ReadEnd::Eof,
            Some(Ok(_)) => {
                record.first_byte.get_or_insert(now - sent);
                if record.first_event.is_none() && scanner.events() > 0 {
                    record.first_event = Some(now - sent);
                }
            }
            Some(Err(ReadFailure::Io(error))) => break ReadEnd::Error(error),
            Some(Err(ReadFailure::Malformed(reason))) => break ReadEnd::Malformed(reason),
        }
    };
    record.status = scanner.status();
    record.events = scanner.events();
    record.bytes = scanner.bytes();
    let ended = Instant::now();
    judge(record, &scanner, end, ended - sent)
}

/// A read that produced no usable bytes.
enum ReadFailure {
    Io(io::Error),
    Malformed(String),
}

impl From<io::Error> for ReadFailure {
    fn from(error: io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<super::response::MalformedResponse> for ReadFailure {
    fn from(error: super::response::MalformedResponse) -> Self {
        Self::Malformed(error.to_string())
    }
}

/// Success is a 200 whose body ends with `data: [DONE]` and then EOF. A non-200 status is
/// reported as such however the connection ended.
fn judge(record: StreamRecord, scanner: &ResponseScanner, end: ReadEnd, elapsed: Duration) -> StreamRecord {
    if let Some(status) = scanner.status().filter(|&status| status != 200) {
        return record.failed(FailureClass::Status, format!("status {status}"));
    }
    match end {
        ReadEnd::Malformed(reason) => record.failed(FailureClass::Malformed, reason),
        ReadEnd::TimedOut => record.failed(FailureClass::Timeout, "timed out reading the response"),
        ReadEnd::Error(error) => record.failed(FailureClass::Read, format!("reading the response: {error}")),
        ReadEnd::Eof if scanner.status().is_none() => {
            let detail = if scanner.bytes() == 0 {
                "closed without a response".to_owned()
            } else {
                format!("closed after {} bytes, inside the response head", scanner.bytes())
            };
            record.failed(FailureClass::Read, detail)
        }
        ReadEnd::Eof if scanner.is_done() => StreamRecord { duration: Some(elapsed), ..record },
        ReadEnd::Eof if scanner.error_events() > 0 => {
            record.failed(FailureClass::Incomplete, "the stream ended with an error event")
        }
        ReadEnd::Eof => record.failed(FailureClass::Incomplete, "the stream ended without data: [DONE]"),
    }
}
