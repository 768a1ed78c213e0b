//! The result of a load run: what `--json` writes and the comparison tool reads.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::config::{ClientKind, HandoffSocketType};

/// Everything a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    pub settings: RunSettings,
    /// Wall time from the first arrival to the last stream's end.
    pub elapsed_secs: f64,
    /// Streams started (equals `settings.streams` unless the run was cut off).
    pub started: u64,
    /// Streams that got a 200 and a body ending with `data: [DONE]`.
    pub ok: u64,
    pub failed: u64,
    pub failures: FailureCounts,
    /// Non-200 statuses and how often each came.
    pub status_codes: BTreeMap<u16, u64>,
    /// Content events delivered (`data:` events other than `[DONE]` and `event: error`).
    pub events: u64,
    /// Response bytes read, heads included.
    pub bytes: u64,
    /// Most streams open at once: handed off, response not yet ended.
    pub peak_open_streams: u64,
    /// Connect start to `sendmsg` done, every stream that was sent.
    pub handoff_latency: LatencySummary,
    /// `sendmsg` done to the first response byte, every stream that got one.
    pub first_byte: LatencySummary,
    /// `sendmsg` done to the first content event, every stream that got one.
    pub first_event: LatencySummary,
    /// `sendmsg` done to EOF, successful streams.
    pub stream_duration: LatencySummary,
    /// The sampled daemon, when a pid was given.
    pub daemon: Option<DaemonUsage>,
    /// What the load generator itself cost.
    pub generator: GeneratorUsage,
    /// The first few failure messages, one per distinct message.
    pub first_errors: Vec<String>,
}

/// The settings a run used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub socket: String,
    pub socket_type: HandoffSocketType,
    pub client: ClientKind,
    /// TCP listeners client connections were spread over (0 for socketpairs).
    pub listeners: u32,
    pub streams: u64,
    pub ramp_secs: f64,
    pub timeout_secs: f64,
    pub data_bytes: u64,
    pub threads: u64,
}

/// Failed streams by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureCounts {
    /// Our side could not set up: the client connection or the Unix socket (fd limit,
    /// ephemeral ports). Says nothing about the daemon.
    pub client: u64,
    /// Connecting to the daemon's Unix socket failed.
    pub connect: u64,
    /// `sendmsg` of the handoff failed or the daemon did not take it in time.
    pub send: u64,
    /// A read error or reset, or the connection closed before a complete response head.
    pub read: u64,
    /// The stream did not end within the per-stream timeout.
    pub timeout: u64,
    /// A 200 whose body ended without `data: [DONE]` (an `event: error` included).
    pub incomplete: u64,
    /// A status other than 200 (counted by code in `status_codes`).
    pub status: u64,
    /// A response head that is not HTTP/1.1.
    pub malformed: u64,
}

/// Why a stream failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureClass {
    Client,
    Connect,
    Send,
    Read,
    Timeout,
    Incomplete,
    Status,
    Malformed,
}

impl FailureCounts {
    pub fn total(&self) -> u64 {
        self.client
            + self.connect
            + self.send
            + self.read
            + self.timeout
            + self.incomplete
            + self.status
            + self.malformed
    }

    pub fn count(&self, class: FailureClass) -> u64 {
        match class {
            FailureClass::Client => self.client,
            FailureClass::Connect => self.connect,
            FailureClass::Send => self.send,
            FailureClass::Read => self.read,
            FailureClass::Timeout => self.timeout,
            FailureClass::Incomplete => self.incomplete,
            FailureClass::Status => self.status,
            FailureClass::Malformed => self.malformed,
        }
    }

    pub fn add(&mut self, class: FailureClass) {
        let slot = match class {
            FailureClass::Client => &mut self.client,
            FailureClass::Connect => &mut self.connect,
            FailureClass::Send => &mut self.send,
            FailureClass::Read => &mut self.read,
            FailureClass::Timeout => &mut self.timeout,
            FailureClass::Incomplete => &mut self.incomplete,
            FailureClass::Status => &mut self.status,
            FailureClass::Malformed => &mut self.malformed,
        };
        *slot += 1;
    }
}

/// Percentiles of one latency, in milliseconds with microsecond resolution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Samples; all other fields are 0 when this is.
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The daemon's cost over the run, sampled from /proc.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonUsage {
    pub pid: u32,
    pub rss_before_bytes: u64,
    /// Highest sampled VmRSS.
    pub rss_peak_bytes: u64,
    pub rss_after_bytes: u64,
    /// VmHWM at the end: the kernel's peak over the daemon's life, spikes between samples
    /// included.
    pub hwm_bytes: u64,
    /// (peak RSS - RSS before) / peak open streams; `None` when no stream was open.
    pub rss_per_peak_stream_bytes: Option<f64>,
    /// User + system CPU seconds during the run.
    pub cpu_seconds: f64,
    pub user_cpu_seconds: f64,
    pub system_cpu_seconds: f64,
    /// CPU microseconds per content event delivered; `None` when none was.
    pub cpu_us_per_event: Option<f64>,
    pub threads_before: u64,
    pub peak_threads: u64,
    pub fds_before: u64,
    pub peak_fds: u64,
    pub samples: u64,
    /// Samples lost to our own limits (out of fds while the load peaked).
    pub missed_samples: u64,
    /// The daemon was gone before the run ended (it exited or crashed).
    pub vanished: bool,
}

/// The load generator's own cost, to tell when it, not the daemon, was the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct GeneratorUsage {
    pub cpu_seconds: f64,
    pub peak_rss_bytes: u64,
    /// The soft fd limit the run had.
    pub fd_limit: u64,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.settings;
        writeln!(
            f,
            "handoff-load: {} streams over {:.1}s to {} ({}, client {}), {:.2}s",
            s.streams,
            s.ramp_secs,
            s.socket,
            socket_type_name(s.socket_type),
            client_name(s.client),
            self.elapsed_secs
        )?;
        writeln!(
            f,
            "  streams   started {}  ok {}  failed {}  peak open {}",
            self.started, self.ok, self.failed, self.peak_open_streams
        )?;
        if self.failed > 0 {
            let c = &self.failures;
            writeln!(
                f,
                "  failures  client {}  connect {}  send {}  read {}  timeout {}  incomplete {}  status {}  \
                 malformed {}",
                c.client, c.connect, c.send, c.read, c.timeout, c.incomplete, c.status, c.malformed
            )?;
            for (status, count) in &self.status_codes {
                writeln!(f, "            status {status}: {count}")?;
            }
        }
        writeln!(f, "  traffic   {} events, {} bytes", self.events, self.bytes)?;
        writeln!(f, "  latency (ms)          p50       p90       p99     p99.9       max")?;
        for (name, summary) in [
            ("handoff", &self.handoff_latency),
            ("first byte", &self.first_byte),
            ("first event", &self.first_event),
            ("stream", &self.stream_duration),
        ] {
            writeln!(
                f,
                "    {name:<12} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}   (n={})",
                summary.p50_ms,
                summary.p90_ms,
                summary.p99_ms,
                summary.p999_ms,
                summary.max_ms,
                summary.count
            )?;
        }
        if let Some(d) = &self.daemon {
            writeln!(
                f,
                "  daemon {}  RSS before {}  peak {}  after {}  HWM {}{}",
                d.pid,
                mib(d.rss_before_bytes),
                mib(d.rss_peak_bytes),
                mib(d.rss_after_bytes),
                mib(d.hwm_bytes),
                if d.vanished { "  (VANISHED during the run)" } else { "" }
            )?;
            if let Some(per_stream) = d.rss_per_peak_stream_bytes {
                writeln!(f, "    RSS growth per peak open stream: {per_stream:.0} bytes")?;
            }
            write!(
                f,
                "    CPU {:.2}s (user {:.2}s, system {:.2}s)",
                d.cpu_seconds, d.user_cpu_seconds, d.system_cpu_seconds
            )?;
            match d.cpu_us_per_event {
                Some(per_event) => writeln!(f, ", {per_event:.2} µs per event")?,
                None => writeln!(f)?,
            }
            writeln!(
                f,
                "    threads {} -> peak {}, fds {} -> peak {}, {} samples{}",
                d.threads_before,
                d.peak_threads,
                d.fds_before,
                d.peak_fds,
                d.samples,
                if d.missed_samples > 0 { format!(" ({} missed)", d.missed_samples) } else { String::new() }
            )?;
        }
        let g = &self.generator;
        writeln!(
            f,
            "  generator CPU {:.2}s, peak RSS {}, fd limit {}",
            g.cpu_seconds,
            mib(g.peak_rss_bytes),
            g.fd_limit
        )?;
        for error in &self.first_errors {
            writeln!(f, "  error: {error}")?;
        }
        Ok(())
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn socket_type_name(socket_type: HandoffSocketType) -> &'static str {
    match socket_type {
        HandoffSocketType::SeqPacket => "seqpacket",
        HandoffSocketType::Stream => "stream",
    }
}

fn client_name(client: ClientKind) -> &'static str {
    match client {
        ClientKind::Tcp => "tcp",
        ClientKind::Unix => "unix",
    }
}
