//! Delivering completion records ([`crate::records`]): where they go, and the
//! decisions the delivery thread carries out: how long to wait before a retry,
//! what a webhook's answer means, whether the spool may take one more record.
//!
//! Nothing here does I/O. The daemon's records thread writes the file, keeps
//! the spool directory and POSTs; streams only hand it a finished record.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::{parse_base_url, BaseUrl, ConfigError};

/// The records settings as the operator gave them (flags, or the config file's
/// `[records]` table), before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsSettings {
    /// `file`: JSON Lines appended here.
    pub file: Option<PathBuf>,
    /// `fsync_ms`: the file is synced at most this often (0: after every write).
    pub fsync_ms: u64,
    /// `buffer_bytes`: records waiting to be written to the file, at most.
    pub buffer_bytes: usize,
    /// `queue`: records waiting for the records thread, at most.
    pub queue: usize,
    /// `webhook`: `http://`, `https://` or `unix:/path.sock[:/http/path]`.
    pub webhook: Option<String>,
    /// The shared secret that signs each POST (read from `webhook_secret_file`
    /// or `HANDOFF_RECORDS_WEBHOOK_SECRET`, never from the file itself).
    pub webhook_secret: Option<String>,
    /// `webhook_secret_file`: where the daemon reads `webhook_secret` from.
    pub webhook_secret_file: Option<PathBuf>,
    /// `webhook_timeout_ms`: connect plus the whole exchange.
    pub webhook_timeout_ms: u64,
    /// `retry_initial_ms`: the first retry's delay; each failure doubles it.
    pub retry_initial_ms: u64,
    /// `retry_max_ms`: the longest delay between attempts.
    pub retry_max_ms: u64,
    /// `batch_max`: records per POST (1: one object per POST; more: an array).
    pub batch_max: usize,
    /// `spool_dir`: where records wait for the webhook (required with one).
    pub spool_dir: Option<PathBuf>,
    /// `spool_max_bytes`: the spool's bound; beyond it records are dropped
    /// (counted and logged), never waited for.
    pub spool_max_bytes: u64,
    /// `flush_timeout_ms`: at shutdown, how long the thread may take to write
    /// out what is queued.
    pub flush_timeout_ms: u64,
}

impl Default for RecordsSettings {
    fn default() -> Self {
        RecordsSettings {
            file: None,
            fsync_ms: 1000,
            buffer_bytes: 1 << 20,
            queue: 65_536,
            webhook: None,
            webhook_secret: None,
            webhook_secret_file: None,
            webhook_timeout_ms: 5000,
            retry_initial_ms: 500,
            retry_max_ms: 60_000,
            batch_max: 100,
            spool_dir: None,
            spool_max_bytes: 1 << 30,
            flush_timeout_ms: 5000,
        }
    }
}

/// Validated records delivery: at least one of a file and a webhook.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordsConfig {
    /// JSON Lines appended here.
    pub file: Option<PathBuf>,
    /// The file is synced at most this often.
    pub fsync_interval: Duration,
    /// Records waiting to be written to the file, at most (bytes).
    pub buffer_bytes: usize,
    /// Records waiting for the records thread, at most.
    pub queue: usize,
    /// POST records here.
    pub webhook: Option<WebhookConfig>,
    /// At shutdown, the longest the thread may take to write out what is queued.
    pub flush_timeout: Duration,
}

/// Where and how records are POSTed.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The receiver (its path is the POST's path).
    pub url: BaseUrl,
    /// Signs each body: `X-Handoff-Signature: sha256=<hex HMAC-SHA256>`.
    pub secret: Option<String>,
    /// Connect plus the whole exchange.
    pub timeout: Duration,
    /// Delays between attempts.
    pub backoff: Backoff,
    /// Records per POST.
    pub batch_max: usize,
    /// Records wait here, one file each, until the receiver took them.
    pub spool_dir: PathBuf,
    /// The spool's bound in bytes.
    pub spool_max_bytes: u64,
}

impl std::fmt::Debug for RecordsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordsConfig")
            .field("file", &self.file)
            .field("fsync_interval", &self.fsync_interval)
            .field("buffer_bytes", &self.buffer_bytes)
            .field("queue", &self.queue)
            .field("webhook", &self.webhook)
            .field("flush_timeout", &self.flush_timeout)
            .finish()
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("backoff", &self.backoff)
            .field("batch_max", &self.batch_max)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .finish()
    }
}

impl RecordsSettings {
    /// The delivery these settings ask for: `None` when neither a file nor a
    /// webhook is set (records are then not built at all).
    pub fn validate(&self) -> Result<Option<RecordsConfig>, ConfigError> {
        let refuse = |reason: &str| ConfigError::Records(reason.to_owned());
        if self.file.is_none() && self.webhook.is_none() {
            return Ok(None);
        }
        if self.queue == 0 {
            return Err(refuse("records queue must be greater than zero"));
        }
        if self.buffer_bytes == 0 {
            return Err(refuse("records buffer_bytes must be greater than zero"));
        }
        if let Some(file) = &self.file {
            if !file.is_absolute() {
                return Err(refuse("records file must be an absolute path"));
            }
        }
        let webhook = match &self.webhook {
            None => None,
            Some(url) => {
                let url =
                    parse_base_url(url).map_err(|error| refuse(&format!("records webhook: {error}")))?;
                let spool_dir =
                    self.spool_dir.clone().ok_or_else(|| refuse("a records webhook needs a spool_dir"))?;
                if !spool_dir.is_absolute() {
                    return Err(refuse("records spool_dir must be an absolute path"));
                }
                if self.webhook_timeout_ms == 0 || self.retry_initial_ms == 0 || self.batch_max == 0 {
                    return Err(refuse(
                        "records webhook_timeout_ms, retry_initial_ms and batch_max must be greater than zero",
                    ));
                }
                if self.retry_max_ms < self.retry_initial_ms {
                    return Err(refuse("records retry_max_ms must not be below retry_initial_ms"));
                }
                Some(WebhookConfig {
                    url,
                    secret: self.webhook_secret.clone().filter(|secret| !secret.is_empty()),
                    timeout: Duration::from_millis(self.webhook_timeout_ms),
                    backoff: Backoff {
                        initial: Duration::from_millis(self.retry_initial_ms),
                        max: Duration::from_millis(self.retry_max_ms),
                    },
                    batch_max: self.batch_max,
                    spool_dir,
                    spool_max_bytes: self.spool_max_bytes,
                })
            }
        };
        Ok(Some(RecordsConfig {
            file: self.file.clone(),
            fsync_interval: Duration::from_millis(self.fsync_ms),
            buffer_bytes: self.buffer_bytes,
            queue: self.queue,
            webhook,
            flush_timeout: Duration::from_millis(self.flush_timeout_ms),
        }))
    }
}

/// Exponential backoff between webhook attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub initial: Duration,
    /// The longest delay.
    pub max: Duration,
}

impl Backoff {
    /// The delay after `failures` failures in a row (1: the first): doubling
    /// from `initial`, capped at `max`. No jitter: one daemon retries one
    /// receiver, so there is no herd to spread.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        self.initial.saturating_mul(1u32 << doublings.min(31)).min(self.max)
    }
}

/// What a webhook POST's result means for the records it carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PostVerdict {
    /// 2xx: the receiver has them; remove them from the spool.
    Delivered,
    /// Worth trying again after the backoff: no answer, 5xx, 408 or 429.
    Retry,
    /// Any other 4xx: the receiver refuses these records and always will.
    /// They are moved out of the queue (kept aside, counted, logged), so one
    /// bad record never blocks the ones behind it.
    Rejected,
}

/// Judges a POST: `status` is the receiver's, `None` when there was no answer
/// (refused, reset, timed out, unreadable).
pub fn judge_post(status: Option<u16>) -> PostVerdict {
    match status {
        Some(200..=299) => PostVerdict::Delivered,
        Some(408 | 429) | None => PostVerdict::Retry,
        Some(400..=499) => PostVerdict::Rejected,
        Some(_) => PostVerdict::Retry,
    }
}

/// True when a record of `adding` bytes fits a spool holding `used` of `max`.
pub fn spool_admits(used: u64, adding: u64, max: u64) -> bool {
    used.checked_add(adding).is_some_and(|total| total <= max)
}

/// A spooled record's file name: its sequence (zero-padded, so names sort in
/// arrival order) and the `.json` suffix. Sequences continue across restarts
/// from the highest found ([`spool_sequence`]).
pub fn spool_file_name(sequence: u64) -> String {
    format!("{sequence:020}.json")
}

/// The sequence of a spool file name ([`spool_file_name`]); `None` for anything
/// else (a temporary file, or a stranger's).
pub fn spool_sequence(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn webhook_settings() -> RecordsSettings {
        RecordsSettings {
            webhook: Some("http://127.0.0.1:9/records".into()),
            spool_dir: Some("/var/spool/handoff".into()),
            ..RecordsSettings::default()
        }
    }

    #[test]
    fn nothing_configured_means_no_records_and_a_webhook_needs_an_absolute_spool() {
        assert_eq!(RecordsSettings::default().validate().unwrap(), None);
        let config = webhook_settings().validate().unwrap().unwrap();
        let webhook = config.webhook.unwrap();
        assert_eq!((webhook.url.port, webhook.url.path.as_str()), (9, "/records"));
        let no_spool = RecordsSettings { spool_dir: None, ..webhook_settings() };
        assert!(no_spool.validate().unwrap_err().to_string().contains("spool_dir"));
        let relative = RecordsSettings { spool_dir: Some("spool".into()), ..webhook_settings() };
        assert!(relative.validate().is_err());
        let bad_url = RecordsSettings { webhook: Some("ftp://x".into()), ..webhook_settings() };
        assert!(bad_url.validate().unwrap_err().to_string().contains("records webhook"));
        let unix = RecordsSettings { webhook: Some("unix:/run/app.sock:/hook".into()), ..webhook_settings() };
        assert!(unix.validate().unwrap().unwrap().webhook.unwrap().url.unix.is_some());
        let file = RecordsSettings { file: Some("records.jsonl".into()), ..RecordsSettings::default() };
        assert!(file.validate().unwrap_err().to_string().contains("absolute"));
    }

    #[test]
    fn the_secret_never_shows_in_debug_output() {
        let settings = RecordsSettings { webhook_secret: Some("s3cret-value".into()), ..webhook_settings() };
        let config = settings.validate().unwrap().unwrap();
        assert!(!format!("{config:?}").contains("s3cret-value"));
    }

    #[test]
    fn backoff_doubles_from_the_initial_delay_up_to_the_cap() {
        let backoff = Backoff { initial: Duration::from_millis(500), max: Duration::from_secs(60) };
        let delays: Vec<_> = (1..=9).map(|n| backoff.delay(n).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn post_results_are_delivered_retried_or_rejected() {
        assert_eq!(judge_post(Some(200)), PostVerdict::Delivered);
        assert_eq!(judge_post(Some(204)), PostVerdict::Delivered);
        for retry in [None, Some(500), Some(503), Some(408), Some(429), Some(301)] {
            assert_eq!(judge_post(retry), PostVerdict::Retry, "{retry:?}");
        }
        for rejected in [Some(400), Some(401), Some(404), Some(413), Some(422)] {
            assert_eq!(judge_post(rejected), PostVerdict::Rejected, "{rejected:?}");
        }
    }

    #[test]
    fn spool_names_sort_in_arrival_order_and_read_back() {
        let (a, b) = (spool_file_name(9), spool_file_name(10));
        assert!(a < b);
        assert_eq!((spool_sequence(&a), spool_sequence(&b)), (Some(9), Some(10)));
        for stranger in ["9.json", "00000000000000000009.json.tmp", "x0000000000000000009.json", ".json"] {
            assert_eq!(spool_sequence(stranger), None, "{stranger}");
        }
        assert!(spool_admits(10, 5, 15) && !spool_admits(10, 6, 15) && !spool_admits(u64::MAX, 1, u64::MAX));
    }
}
