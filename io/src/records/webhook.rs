//! The records webhook: every record is first written to the spool directory
//! (one file each, made durable before it counts as spooled), then POSTed in
//! batches; a file leaves the spool only when the receiver answered 2xx. So a
//! receiver that is down, or a daemon restarted in between, loses nothing: the
//! next start finds the files and sends them (at-least-once; receivers dedupe
//! on each record's `request_id`).
//!
//! One thread does it all with blocking sockets: it is off every stream's
//! path, and one POST at a time is what one receiver wants.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff_core::delivery::{
    judge_post, spool_admits, spool_file_name, spool_sequence, PostVerdict, WebhookConfig,
};
use handoff_core::metrics::{Metrics, RecordEvent};

/// The subdirectory of the spool where refused records are kept for the operator.
const REJECTED_DIR: &str = "rejected";
/// A receiver's response head larger than this is not read further.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

enum Message {
    Record(Vec<u8>),
    Shutdown,
}

/// The handle streams use; the thread owns the spool.
pub(super) struct Webhook {
    queue: SyncSender<Message>,
    control: SyncSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Webhook {
    /// Creates the spool directory if needed, takes up what an earlier run
    /// left in it, and starts the delivery thread.
    pub(super) fn start(
        config: &WebhookConfig,
        queue: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Webhook, String> {
        let spool = Spool::open(&config.spool_dir)
            .map_err(|error| format!("records spool {}: {error}", config.spool_dir.display()))?;
        if !spool.pending.is_empty() {
            tracing::info!(
                records = spool.pending.len(),
                bytes = spool.used,
                "records left in the spool by an earlier run will be delivered"
            );
        }
        metrics.set_records_spool_bytes(spool.used);
        let transport = Transport::for_config(config)?;
        let (queue, records) = mpsc::sync_channel(queue);
        let (control, commands) = mpsc::sync_channel(2);
        let mut deliverer = Deliverer {
            config: config.clone(),
            transport,
            spool,
            metrics,
            failures: 0,
            next_attempt: Instant::now(),
            last_full_log: None,
        };
        let thread = std::thread::Builder::new()
            .name("handoff-webhook".into())
            .spawn(move || deliverer.run(&records, &commands))
            .map_err(|error| format!("starting the records webhook thread: {error}"))?;
        Ok(Webhook { queue, control, thread: Mutex::new(Some(thread)) })
    }

    /// False when the queue is full (the record is lost; the caller counts it).
    pub(super) fn submit(&self, json: Vec<u8>) -> bool {
        match self.queue.try_send(Message::Record(json)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Spools what is queued (delivery continues at the next start), then stops.
    pub(super) fn shutdown(&self, deadline: Instant) {
        let _ = self.control.try_send(Message::Shutdown);
        let _ = self.queue.try_send(Message::Shutdown);
        if !super::join_by(&self.thread, deadline) {
            tracing::warn!("the records webhook did not spool its queue within the shutdown deadline");
        }
    }
}

/// The spool directory and what waits in it, oldest first.
struct Spool {
    dir: PathBuf,
    /// Sequence and size of each spooled record, in arrival order.
    pending: VecDeque<(u64, u64)>,
    used: u64,
    next_sequence: u64,
}

impl Spool {
    fn open(dir: &Path) -> std::io::Result<Spool> {
        std::fs::create_dir_all(dir.join(REJECTED_DIR))?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(sequence) = spool_sequence(name) {
                found.push((sequence, entry.metadata()?.len()));
            } else if name.ends_with(".json.tmp") {
                // A record whose write a crash cut short was never counted as spooled.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        found.sort_unstable();
        let used = found.iter().map(|(_, size)| size).sum();
        let next_sequence = found.last().map_or(0, |(sequence, _)| sequence + 1);
        Ok(Spool { dir: dir.to_owned(), pending: found.into(), used, next_sequence })
    }

    fn path(&self, sequence: u64) -> PathBuf {
        self.dir.join(spool_file_name(sequence))
    }

    /// Writes `records` as spool files, durable before they count: all are
    /// written, the file system synced once, then renamed into place and synced
    /// again (one sync per batch, not one per record). Returns how many were
    /// spooled; the rest did not fit or could not be written.
    fn add(&mut self, records: Vec<Vec<u8>>, max_bytes: u64) -> (u64, u64) {
        let mut written = Vec::with_capacity(records.len());
        let mut refused = 0;
        let mut adding = 0u64;
        for record in records {
            let size = record.len() as u64;
            if !spool_admits(self.used + adding, size, max_bytes) {
                refused += 1;
                continue;
            }
            let sequence = self.next_sequence;
            self.next_sequence += 1;
            let final_path = self.path(sequence);
            let tmp = final_path.with_extension("json.tmp");
            match File::create(&tmp).and_then(|mut file| file.write_all(&record)) {
                Ok(()) => {
                    adding += size;
                    written.push((sequence, size, tmp, final_path));
                }
                Err(error) => {
                    tracing::error!(path = %tmp.display(), %error, "spooling a completion record failed");
                    let _ = std::fs::remove_file(&tmp);
                    refused += 1;
                }
            }
        }
        if written.is_empty() {
            return (0, refused);
        }
        self.sync();
        let mut spooled = 0;
        for (sequence, size, tmp, final_path) in written {
            match std::fs::rename(&tmp, &final_path) {
                Ok(()) => {
                    self.pending.push_back((sequence, size));
                    self.used += size;
                    spooled += 1;
                }
                Err(error) => {
                    tracing::error!(path = %tmp.display(), %error, "spooling a completion record failed");
                    let _ = std::fs::remove_file(&tmp);
                    refused += 1;
                }
            }
        }
        self.sync();
        (spooled, refused)
    }

    fn sync(&self) {
        let synced = File::open(&self.dir).and_then(|dir| rustix::fs::syncfs(&dir).map_err(Into::into));
        if let Err(error) = synced {
            tracing::warn!(dir = %self.dir.display(), %error, "syncing the records spool failed");
        }
    }

    /// The oldest `max` records' bodies, with their sequences; a file gone
    /// missing is forgotten.
    fn oldest(&mut self, max: usize) -> Vec<(u64, u64, Vec<u8>)> {
        let mut batch = Vec::new();
        while batch.len() < max {
            let Some(&(sequence, size)) = self.pending.get(batch.len()) else { break };
            match std::fs::read(self.path(sequence)) {
                Ok(body) => batch.push((sequence, size, body)),
                Err(error) => {
                    tracing::error!(sequence, %error, "a spooled completion record could not be read; skipped");
                    self.pending.remove(batch.len());
                    self.used = self.used.saturating_sub(size);
                }
            }
        }
        batch
    }

    /// Takes the first `count` records off the queue: removed when delivered,
    /// moved to `rejected/` when refused.
    fn settle(&mut self, count: usize, delivered: bool) {
        for _ in 0..count {
            let Some((sequence, size)) = self.pending.pop_front() else { break };
            let path = self.path(sequence);
            let result = if delivered {
                std::fs::remove_file(&path)
            } else {
                std::fs::rename(&path, self.dir.join(REJECTED_DIR).join(spool_file_name(sequence)))
            };
            if let Err(error) = result {
                tracing::warn!(path = %path.display(), %error, "clearing a spooled completion record failed");
            }
            self.used = self.used.saturating_sub(size);
        }
    }
}

struct Deliverer {
    config: WebhookConfig,
    transport: Transport,
    spool: Spool,
    metrics: Arc<Metrics>,
    /// Failed attempts in a row.
    failures: u32,
    next_attempt: Instant,
    last_full_log: Option<Instant>,
}

impl Deliverer {
    fn run(&mut self, records: &Receiver<Message>, commands: &Receiver<Message>) {
        loop {
            let wait = if self.spool.pending.is_empty() {
                Duration::from_secs(3600)
            } else {
                self.next_attempt.saturating_duration_since(Instant::now())
            };
            let mut incoming = Vec::new();
            let mut stop = commands.try_recv().is_ok();
            match records.recv_timeout(wait) {
                Ok(Message::Record(json)) => incoming.push(json),
                Ok(Message::Shutdown) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            for message in records.try_iter() {
                match message {
                    Message::Record(json) => incoming.push(json),
                    Message::Shutdown => stop = true,
                }
            }
            stop |= commands.try_recv().is_ok();
            if !incoming.is_empty() {
                self.spool_records(incoming);
            }
            if stop {
                if !self.spool.pending.is_empty() {
                    tracing::info!(
                        records = self.spool.pending.len(),
                        "records not yet delivered stay in the spool for the next start"
                    );
                }
                return;
            }
            if !self.spool.pending.is_empty() && Instant::now() >= self.next_attempt {
                self.attempt();
            }
        }
    }

    fn spool_records(&mut self, incoming: Vec<Vec<u8>>) {
        let (spooled, refused) = self.spool.add(incoming, self.config.spool_max_bytes);
        self.metrics.record_records(RecordEvent::Spooled, spooled);
        if refused > 0 {
            self.metrics.record_records(RecordEvent::Dropped, refused);
            let now = Instant::now();
            if self.last_full_log.is_none_or(|last| now.duration_since(last) >= Duration::from_secs(1)) {
                self.last_full_log = Some(now);
                tracing::error!(
                    dropped = refused,
                    spool_bytes = self.spool.used,
                    max_bytes = self.config.spool_max_bytes,
                    "completion records dropped: the records spool is full or unwritable"
                );
            }
        }
        self.metrics.set_records_spool_bytes(self.spool.used);
    }

    /// One POST of the oldest records.
    fn attempt(&mut self) {
        let batch = self.spool.oldest(self.config.batch_max);
        if batch.is_empty() {
            return;
        }
        let count = batch.len();
        let body = batch_body(batch.iter().map(|(_, _, body)| body.as_slice()), self.config.batch_max > 1);
        let first = batch.first().map_or(0, |(sequence, _, _)| *sequence);
        let outcome = self.transport.post(&self.config, &body);
        let status = outcome.as_ref().ok().copied();
        match judge_post(status) {
            PostVerdict::Delivered => {
                if self.failures > 0 {
                    tracing::info!(after_failures = self.failures, "the records webhook takes records again");
                }
                self.failures = 0;
                self.spool.settle(count, true);
                self.metrics.record_records(RecordEvent::Delivered, count as u64);
            }
            PostVerdict::Rejected => {
                tracing::error!(
                    status, records = count, first_sequence = first,
                    dir = %self.spool.dir.join(REJECTED_DIR).display(),
                    "the records webhook refused these records; kept aside, not retried"
                );
                self.spool.settle(count, false);
                self.metrics.record_records(RecordEvent::Rejected, count as u64);
            }
            _ => {
                self.failures = self.failures.saturating_add(1);
                let delay = self.config.backoff.delay(self.failures);
                self.next_attempt = Instant::now() + delay;
                self.metrics.record_records(RecordEvent::Retried, count as u64);
                // Logged at the first failure and then at each doubling, not every retry.
                if self.failures.is_power_of_two() {
                    let why = match &outcome {
                        Ok(status) => format!("status {status}"),
                        Err(error) => error.clone(),
                    };
                    tracing::warn!(
                        failures = self.failures,
                        retry_in_ms = delay.as_millis() as u64,
                        pending = self.spool.pending.len(),
                        "the records webhook did not take records ({why}); they stay spooled"
                    );
                }
            }
        }
        self.metrics.set_records_spool_bytes(self.spool.used);
    }
}

/// One record's object, or (batches allowed) a JSON array of them.
fn batch_body<'a>(records: impl Iterator<Item = &'a [u8]>, as_array: bool) -> Vec<u8> {
    let mut body = Vec::new();
    if as_array {
        body.push(b'[');
    }
    for (index, record) in records.enumerate() {
        if index > 0 {
            body.push(b',');
        }
        body.extend_from_slice(record);
        if !as_array {
            break;
        }
    }
    if as_array {
        body.push(b']');
    }
    body
}

/// `sha256=<hex>` of the body, keyed by the shared secret.
pub(super) fn signature(secret: &str, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let tag = ring::hmac::sign(&key, body);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for byte in tag.as_ref() {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// How a POST reaches the receiver.
enum Transport {
    Tcp,
    Tls(Arc<rustls::ClientConfig>),
    Unix(PathBuf),
}

trait Connection: Read + Write {}
impl<T: Read + Write> Connection for T {}

impl Transport {
    fn for_config(config: &WebhookConfig) -> Result<Transport, String> {
        if let Some(path) = &config.url.unix {
            return Ok(Transport::Unix(path.clone()));
        }
        if config.url.tls {
            let tls = crate::backend::tls::client_config(None, false, &[b"http/1.1"])
                .map_err(|error| format!("records webhook TLS: {error}"))?;
            return Ok(Transport::Tls(tls));
        }
        Ok(Transport::Tcp)
    }

    /// POSTs `body`; the receiver's status, or why there was none.
    fn post(&self, config: &WebhookConfig, body: &[u8]) -> Result<u16, String> {
        let deadline = Instant::now() + config.timeout;
        let mut connection = self.connect(config, deadline)?;
        let path = if config.url.path.is_empty() { "/" } else { config.url.path.as_str() };
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\nUser-Agent: handoff\r\n",
            config.url.authority(),
            body.len()
        );
        if let Some(secret) = &config.secret {
            head.push_str("X-Handoff-Signature: ");
            head.push_str(&signature(secret, body));
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        connection
            .write_all(head.as_bytes())
            .and_then(|()| connection.write_all(body))
            .and_then(|()| connection.flush())
            .map_err(|error| format!("sending: {error}"))?;
        read_status(&mut *connection)
    }

    fn connect(&self, config: &WebhookConfig, deadline: Instant) -> Result<Box<dyn Connection>, String> {
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        match self {
            Transport::Unix(path) => {
                let stream = UnixStream::connect(path)
                    .map_err(|error| format!("connecting to {}: {error}", path.display()))?;
                stream.set_read_timeout(Some(left())).map_err(|error| error.to_string())?;
                stream.set_write_timeout(Some(left())).map_err(|error| error.to_string())?;
                Ok(Box::new(stream))
            }
            Transport::Tcp | Transport::Tls(_) => {
                let url = &config.url;
                let address = (url.host.as_str(), url.port)
                    .to_socket_addrs()
                    .map_err(|error| format!("resolving {}: {error}", url.host))?
                    .next()
                    .ok_or_else(|| format!("{} has no address", url.host))?;
                let stream = TcpStream::connect_timeout(&address, left())
                    .map_err(|error| format!("connecting to {address}: {error}"))?;
                stream.set_read_timeout(Some(left())).map_err(|error| error.to_string())?;
                stream.set_write_timeout(Some(left())).map_err(|error| error.to_string())?;
                let _ = stream.set_nodelay(true);
                match self {
                    Transport::Tls(tls) => {
                        let name = rustls::pki_types::ServerName::try_from(url.host.clone())
                            .map_err(|error| format!("records webhook host {}: {error}", url.host))?;
                        let session = rustls::ClientConnection::new(tls.clone(), name)
                            .map_err(|error| format!("TLS: {error}"))?;
                        Ok(Box::new(rustls::StreamOwned::new(session, stream)))
                    }
                    _ => Ok(Box::new(stream)),
                }
            }
        }
    }
}

/// Reads the response head and returns its status code.
fn read_status(connection: &mut dyn Connection) -> Result<u16, String> {
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(line_end) = head.windows(2).position(|pair| pair == b"\r\n") {
            let line = String::from_utf8_lossy(head.get(..line_end).unwrap_or_default());
            return parse_status_line(&line).ok_or_else(|| format!("not an HTTP status line: {line:?}"));
        }
        if head.len() > MAX_RESPONSE_HEAD {
            return Err("the receiver's response line is too long".into());
        }
        match connection.read(&mut chunk) {
            Ok(0) => return Err("the receiver closed the connection without answering".into()),
            Ok(read) => head.extend_from_slice(chunk.get(..read).unwrap_or_default()),
            Err(error) => return Err(format!("reading the answer: {error}")),
        }
    }
}

/// `HTTP/1.x NNN reason` → `NNN`.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split(' ');
    let version = parts.next()?;
    if !version.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests;
