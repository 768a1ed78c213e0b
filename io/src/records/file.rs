//! The records file: JSON Lines appended by one thread, with a bounded
//! write-behind buffer, synced at most every `fsync_interval`, reopened on
//! request (logrotate renames the file, then sends SIGHUP).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use handoff_core::delivery::RecordsConfig;
use handoff_core::metrics::{Metrics, RecordEvent};

/// Bytes gathered before a write; below it, a write waits at most `WRITE_EVERY`.
const WRITE_AT: usize = 64 * 1024;
/// The longest a record waits in the buffer before it is written.
const WRITE_EVERY: Duration = Duration::from_millis(100);

enum Message {
    Record(Vec<u8>),
    Reopen,
    Shutdown,
}

/// The handle streams and the reload thread use.
pub(super) struct FileWriter {
    queue: SyncSender<Message>,
    /// Commands that must not be lost to a full queue (reopen, shutdown).
    control: SyncSender<Message>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl FileWriter {
    pub(super) fn start(config: &RecordsConfig, metrics: Arc<Metrics>) -> Result<FileWriter, String> {
        let path = config.file.clone().ok_or("no records file configured")?;
        let file = open(&path).map_err(|error| format!("records file {}: {error}", path.display()))?;
        let (queue, records) = mpsc::sync_channel(config.queue);
        let (control, commands) = mpsc::sync_channel(4);
        let mut writer = Writer {
            path,
            file,
            buffer: Vec::with_capacity(WRITE_AT),
            buffered: 0,
            max_buffer: config.buffer_bytes,
            fsync_interval: config.fsync_interval,
            last_sync: Instant::now(),
            unsynced: false,
            metrics,
        };
        let thread = std::thread::Builder::new()
            .name("handoff-records".into())
            .spawn(move || writer.run(&records, &commands))
            .map_err(|error| format!("starting the records thread: {error}"))?;
        Ok(FileWriter { queue, control, thread: Mutex::new(Some(thread)) })
    }

    /// False when the queue is full (the record is lost; the caller counts it).
    pub(super) fn submit(&self, json: Vec<u8>) -> bool {
        match self.queue.try_send(Message::Record(json)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    pub(super) fn reopen(&self) {
        let _ = self.control.try_send(Message::Reopen);
        // Wakes the thread if it waits on the records queue.
        let _ = self.queue.try_send(Message::Reopen);
    }

    pub(super) fn shutdown(&self, deadline: Instant) {
        let _ = self.control.try_send(Message::Shutdown);
        let _ = self.queue.try_send(Message::Shutdown);
        if !super::join_by(&self.thread, deadline) {
            tracing::warn!("the records file was not flushed within the shutdown deadline");
        }
    }
}

fn open(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Writer {
    path: PathBuf,
    file: File,
    buffer: Vec<u8>,
    /// Records in `buffer`.
    buffered: u64,
    max_buffer: usize,
    fsync_interval: Duration,
    last_sync: Instant,
    unsynced: bool,
    metrics: Arc<Metrics>,
}

impl Writer {
    fn run(&mut self, records: &Receiver<Message>, commands: &Receiver<Message>) {
        let mut first_buffered: Option<Instant> = None;
        loop {
            let wait = match first_buffered {
                Some(since) => WRITE_EVERY.saturating_sub(since.elapsed()),
                None if self.unsynced => self.fsync_interval.saturating_sub(self.last_sync.elapsed()),
                None => Duration::from_secs(3600),
            };
            let message = match records.recv_timeout(wait) {
                Ok(message) => Some(message),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => Some(Message::Shutdown),
            };
            let mut stop = false;
            for message in message.into_iter().chain(commands.try_iter()) {
                match message {
                    Message::Record(json) => {
                        if self.buffer.len() + json.len() + 1 > self.max_buffer && !self.buffer.is_empty() {
                            self.write_out();
                        }
                        self.buffer.extend_from_slice(&json);
                        self.buffer.push(b'\n');
                        self.buffered += 1;
                        first_buffered.get_or_insert_with(Instant::now);
                    }
                    Message::Reopen => {
                        self.write_out();
                        self.sync();
                        match open(&self.path) {
                            Ok(file) => self.file = file,
                            Err(error) => tracing::error!(
                                path = %self.path.display(), %error,
                                "reopening the records file failed; still writing the old one"
                            ),
                        }
                    }
                    Message::Shutdown => stop = true,
                }
            }
            if stop {
                // Everything already queued is written before the thread ends.
                while let Ok(Message::Record(json)) = records.try_recv() {
                    self.buffer.extend_from_slice(&json);
                    self.buffer.push(b'\n');
                    self.buffered += 1;
                }
                self.write_out();
                self.sync();
                return;
            }
            if first_buffered.is_some_and(|since| since.elapsed() >= WRITE_EVERY)
                || self.buffer.len() >= WRITE_AT
            {
                self.write_out();
                first_buffered = None;
            }
            if self.unsynced && self.last_sync.elapsed() >= self.fsync_interval {
                self.sync();
            }
        }
    }

    fn write_out(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        match self.file.write_all(&self.buffer) {
            Ok(()) => self.metrics.record_records(RecordEvent::Written, self.buffered),
            Err(error) => {
                self.metrics.record_records(RecordEvent::Dropped, self.buffered);
                tracing::error!(path = %self.path.display(), %error, records = self.buffered, "writing completion records failed");
            }
        }
        self.buffer.clear();
        self.buffered = 0;
        self.unsynced = true;
    }

    fn sync(&mut self) {
        if let Err(error) = self.file.sync_data() {
            tracing::warn!(path = %self.path.display(), %error, "syncing the records file failed");
        }
        self.unsynced = false;
        self.last_sync = Instant::now();
    }
}
