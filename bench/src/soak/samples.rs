//! The daemon over time: RSS, fds, threads and CPU read from /proc once per interval
//! on a thread of its own (a slow /proc read never delays a stream), with a progress
//! line now and then.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::generator::Live;
use crate::load::procfs::{cpu_seconds, ProcSample, Process};

/// One reading, timed from the start of the soak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    pub t_secs: f64,
    pub rss_bytes: u64,
    pub fds: u64,
    pub threads: u64,
    /// User + system CPU seconds since the first sample.
    pub cpu_secs: f64,
    /// Streams the generator had open then.
    pub open_streams: u64,
}

/// What the sampling thread hands back.
#[derive(Debug, Default)]
pub struct Trace {
    pub samples: Vec<Sample>,
    /// Reads that failed for our own reasons.
    pub missed: u64,
    /// The daemon was gone before the end.
    pub vanished_at: Option<f64>,
}

/// The sampling thread.
#[derive(Debug)]
pub struct Recorder {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Trace>,
}

impl Recorder {
    /// Samples `pid` now and every `interval`; prints a progress line every `progress`.
    pub fn start(pid: u32, interval: Duration, progress: Duration, live: Arc<Live>) -> io::Result<Recorder> {
        let process = Process::Pid(pid);
        let first = process.sample(true)?;
        let start = Instant::now();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("soak-sampler".to_owned()).spawn(move || {
            let mut trace = Trace::default();
            trace.samples.push(reading(&first, &first, 0.0, &live));
            let mut last_progress = start;
            loop {
                let stop_now =
                    !matches!(stopped.recv_timeout(interval), Err(mpsc::RecvTimeoutError::Timeout));
                let t = start.elapsed().as_secs_f64();
                match process.sample(true) {
                    Ok(sample) => trace.samples.push(reading(&first, &sample, t, &live)),
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {
                        trace.vanished_at = Some(t);
                        return trace;
                    }
                    Err(_) => trace.missed += 1,
                }
                if last_progress.elapsed() >= progress {
                    last_progress = Instant::now();
                    if let Some(sample) = trace.samples.last() {
                        print_progress(sample, &live);
                    }
                }
                if stop_now {
                    return trace;
                }
            }
        })?;
        Ok(Recorder { stop, thread })
    }

    /// One last sample, then the trace; `None` if the thread died.
    pub fn finish(self) -> Option<Trace> {
        // A send error means the thread already ended (the daemon vanished).
        let _ = self.stop.send(());
        self.thread.join().ok()
    }
}

fn reading(first: &ProcSample, sample: &ProcSample, t_secs: f64, live: &Live) -> Sample {
    let (user, system) = cpu_seconds(first, sample);
    Sample {
        t_secs,
        rss_bytes: sample.rss_bytes,
        fds: sample.fds,
        threads: sample.threads,
        cpu_secs: user + system,
        open_streams: live.open.load(Ordering::Relaxed),
    }
}

fn print_progress(sample: &Sample, live: &Live) {
    eprintln!(
        "soak: {:>6.0} s  open {:>5}  done {:>8}  failed {:>4}  daemon rss {:>7.1} MiB  fds {:>5}  threads {:>3}  cpu {:>7.1} s",
        sample.t_secs,
        sample.open_streams,
        live.done.load(Ordering::Relaxed),
        live.failed.load(Ordering::Relaxed),
        sample.rss_bytes as f64 / MIB,
        sample.fds,
        sample.threads,
        sample.cpu_secs,
    );
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// The samples as CSV, one row per reading.
pub fn write_csv(path: &Path, samples: &[Sample]) -> io::Result<()> {
    let mut out = io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "t_secs,rss_bytes,fds,threads,cpu_secs,open_streams")?;
    for s in samples {
        writeln!(
            out,
            "{:.3},{},{},{},{:.2},{}",
            s.t_secs, s.rss_bytes, s.fds, s.threads, s.cpu_secs, s.open_streams
        )?;
    }
    out.flush()
}
