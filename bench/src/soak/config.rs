//! What a soak does.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::mix::Mix;
use super::trend::GrowthLimit;

/// The daemon's backend in a soak: mock-llm over HTTP/2+TLS or over HTTP/1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SoakBackend {
    /// HTTP/2 over TLS (ALPN), the daemon trusting mock-llm's generated CA.
    H2tls,
    /// HTTP/1.1 without TLS, one backend connection per stream.
    Http1,
}

impl SoakBackend {
    pub fn name(self) -> &'static str {
        match self {
            SoakBackend::H2tls => "h2tls",
            SoakBackend::Http1 => "http1",
        }
    }
}

/// One soak run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The daemon binary (handoff-tokio or handoff-smol: it takes their flags).
    pub daemon: PathBuf,
    pub mock_llm: PathBuf,
    pub backend: SoakBackend,
    /// Streams open at once.
    pub concurrency: u64,
    /// Streams start for this long (then the last ones finish).
    pub duration: Duration,
    /// Samples before this are not judged: buffers, pools and allocator arenas fill.
    pub warmup: Duration,
    /// The first streams start spread over this span.
    pub ramp: Duration,
    pub mix: Mix,
    /// Milliseconds between the backend's chunks (mock-llm `--token-delay-ms`).
    pub delay_ms: u64,
    /// Content chunks per normal stream (mock-llm `--tokens`).
    pub tokens: u32,
    /// Backend silence of a backend-stall stream.
    pub stall: Duration,
    /// The daemon's `--first-byte-timeout`, below the stall so stalls end in its timeout.
    pub first_byte_timeout: Duration,
    /// How long a client-stop-reading client reads nothing.
    pub stop_reading: Duration,
    /// Per stream, from start to the end of its response; longer than every daemon
    /// deadline a soak stream meets, so only a stream the daemon never ends reaches it.
    pub stream_timeout: Duration,
    /// Pause after a 503 (the daemon's `Retry-After`).
    pub retry_pause: Duration,
    pub rss_limit: GrowthLimit,
    pub fd_limit: GrowthLimit,
    pub sample_interval: Duration,
    pub progress_interval: Duration,
    /// The daemon's `--threads` (its default when `None`).
    pub daemon_threads: Option<usize>,
    /// mock-llm's worker threads (one per CPU when `None`).
    pub mock_threads: Option<usize>,
    /// Generator runtime threads (1: single-threaded).
    pub generator_threads: usize,
    pub seed: u64,
    /// Streams closed without a byte that still pass the run (default 0). The
    /// known handoff loss (README, "Known defect") is about one in a million; a
    /// short CI soak sets this so that defect, reported in the summary, cannot fail
    /// it by chance. Every other failure still fails the run.
    pub tolerated_no_answer: u64,
    /// Where samples, summary, plot and logs go.
    pub out_dir: PathBuf,
    pub stop_timeout: Duration,
}

impl SoakConfig {
    /// The defaults: 5,000 streams for 10 minutes over HTTP/2+TLS, the default mix.
    pub fn new(daemon: PathBuf, mock_llm: PathBuf, out_dir: PathBuf) -> SoakConfig {
        SoakConfig {
            daemon,
            mock_llm,
            backend: SoakBackend::H2tls,
            concurrency: 5_000,
            duration: Duration::from_secs(600),
            warmup: Duration::from_secs(60),
            ramp: Duration::from_secs(10),
            mix: Mix::default(),
            delay_ms: 705,
            tokens: 18,
            stall: Duration::from_secs(8),
            first_byte_timeout: Duration::from_secs(5),
            stop_reading: Duration::from_secs(5),
            stream_timeout: Duration::from_secs(180),
            retry_pause: Duration::from_secs(1),
            rss_limit: GrowthLimit { relative: 0.10, floor: 8.0 * 1024.0 * 1024.0 },
            fd_limit: GrowthLimit { relative: 0.10, floor: 64.0 },
            sample_interval: Duration::from_secs(1),
            progress_interval: Duration::from_secs(10),
            daemon_threads: None,
            mock_threads: None,
            generator_threads: 1,
            seed: 1,
            tolerated_no_answer: 0,
            out_dir,
            stop_timeout: Duration::from_secs(15),
        }
    }

    /// Streams the regular slots hold: the daemon's `--max-connections`.
    pub fn max_connections(&self) -> u64 {
        self.concurrency - self.mix.over_capacity_slots(self.concurrency)
    }

    /// Settings that make no soak.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("--concurrency must be at least 1".to_owned());
        }
        if self.warmup >= self.duration {
            return Err(format!(
                "--warmup ({:?}) must be shorter than --duration ({:?}): nothing would be judged",
                self.warmup, self.duration
            ));
        }
        if self.stall <= self.first_byte_timeout {
            return Err(format!(
                "--stall-ms ({:?}) must exceed --first-byte-timeout ({:?}) so a stall meets the daemon's timeout",
                self.stall, self.first_byte_timeout
            ));
        }
        if self.sample_interval.is_zero() || self.stream_timeout.is_zero() {
            return Err("the sample interval and stream timeout must be more than zero".to_owned());
        }
        Ok(())
    }
}
