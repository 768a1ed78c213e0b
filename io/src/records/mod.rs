//! Delivers completion records ([`handoff_core::records`]) without a stream
//! ever waiting: a stream hands its finished record to [`Sink::submit`], which
//! only tries a bounded channel send (once per stream, never per event). The
//! file and the webhook each have their own thread, so a slow receiver never
//! holds up the file.
//!
//! A full queue drops the record, counted in `handoff_records_total{result=
//! "dropped"}` and logged at most once a second; the stream is never blocked.

mod file;
mod webhook;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use handoff_core::delivery::RecordsConfig;
use handoff_core::metrics::{Metrics, RecordEvent};

/// Fills in the webhook's secret: from `webhook_secret_file`, else from
/// `$HANDOFF_RECORDS_WEBHOOK_SECRET` (never from a flag or the config file,
/// which others may read). The secret is redacted from logs from here on.
pub fn read_secret(settings: &mut handoff_core::delivery::RecordsSettings) -> Result<(), String> {
    let secret = match &settings.webhook_secret_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .map_err(|error| format!("records webhook secret file {}: {error}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => std::env::var("HANDOFF_RECORDS_WEBHOOK_SECRET").ok(),
    };
    let secret = secret.filter(|secret| !secret.is_empty());
    if let Some(secret) = &secret {
        handoff_core::redact::register_secrets([secret.as_str()]);
    }
    settings.webhook_secret = secret;
    Ok(())
}

/// Waits until `deadline` for a records thread (told to stop) to end, and
/// joins it; false when it is still running at the deadline.
fn join_by(thread: &std::sync::Mutex<Option<std::thread::JoinHandle<()>>>, deadline: Instant) -> bool {
    let thread = thread.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let Some(thread) = thread else { return true };
    while !thread.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    if !thread.is_finished() {
        return false;
    }
    let _ = thread.join();
    true
}

/// Where a daemon's records go; cloned into every worker.
#[derive(Clone)]
pub struct Sink {
    inner: Arc<Inner>,
}

struct Inner {
    file: Option<file::FileWriter>,
    webhook: Option<webhook::Webhook>,
    metrics: Arc<Metrics>,
    /// When a drop was last logged (seconds since `started`), to log at most
    /// once a second.
    last_drop_log: AtomicU64,
    started: Instant,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("file", &self.inner.file.is_some())
            .field("webhook", &self.inner.webhook.is_some())
            .finish()
    }
}

impl Sink {
    /// Starts the threads `config` needs: opens the file (an error here stops
    /// the daemon's start: the operator asked for records), and scans the spool.
    pub fn start(config: &RecordsConfig, metrics: Arc<Metrics>) -> Result<Sink, String> {
        let file =
            config.file.as_ref().map(|_| file::FileWriter::start(config, metrics.clone())).transpose()?;
        let webhook = config
            .webhook
            .as_ref()
            .map(|webhook| webhook::Webhook::start(webhook, config.queue, metrics.clone()))
            .transpose()?;
        Ok(Sink {
            inner: Arc::new(Inner {
                file,
                webhook,
                metrics,
                last_drop_log: AtomicU64::new(u64::MAX),
                started: Instant::now(),
            }),
        })
    }

    /// Hands one record (a JSON object) to every destination; never blocks.
    pub fn submit(&self, json: Vec<u8>) {
        let inner = &*self.inner;
        match (&inner.file, &inner.webhook) {
            (Some(file), Some(webhook)) => {
                let kept = file.submit(json.clone());
                let sent = webhook.submit(json);
                self.count_drops(u64::from(!kept) + u64::from(!sent));
            }
            (Some(file), None) => self.count_drops(u64::from(!file.submit(json))),
            (None, Some(webhook)) => self.count_drops(u64::from(!webhook.submit(json))),
            (None, None) => {}
        }
    }

    /// Reopens the records file (SIGHUP, after logrotate moved it).
    pub fn reopen(&self) {
        if let Some(file) = &self.inner.file {
            file.reopen();
        }
    }

    /// Writes out what is queued (file and spool) within `timeout`, then stops
    /// the threads. Records submitted later are dropped.
    pub fn shutdown(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        if let Some(file) = &self.inner.file {
            file.shutdown(deadline);
        }
        if let Some(webhook) = &self.inner.webhook {
            webhook.shutdown(deadline);
        }
    }

    fn count_drops(&self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        self.inner.metrics.record_records(RecordEvent::Dropped, dropped);
        let second = self.inner.started.elapsed().as_secs();
        let last = self.inner.last_drop_log.swap(second, Ordering::Relaxed);
        if last != second {
            tracing::warn!(
                "completion record dropped: the records queue is full (see handoff_records_total)"
            );
        }
    }
}
