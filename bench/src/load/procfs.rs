//! What a process costs, read from /proc: memory, CPU time, threads, open fds.

use std::io;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// One reading of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// The kernel's own peak RSS (VmHWM) over the process's life.
    pub hwm_bytes: u64,
    pub threads: u64,
    /// User and system CPU time, in clock ticks.
    pub user_ticks: u64,
    pub system_ticks: u64,
    pub fds: u64,
}

/// Which process to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Process {
    /// This process (`/proc/self`).
    Current,
    Pid(u32),
}

impl Process {
    fn dir(self) -> PathBuf {
        match self {
            Self::Current => PathBuf::from("/proc/self"),
            Self::Pid(pid) => PathBuf::from(format!("/proc/{pid}")),
        }
    }

    /// Reads memory, threads and CPU time; `with_fds` also counts open fds (a directory
    /// listing, the only part whose cost grows with the load).
    pub fn sample(self, with_fds: bool) -> io::Result<ProcSample> {
        let dir = self.dir();
        let status = std::fs::read_to_string(dir.join("status"))?;
        // A zombie still has a /proc entry, but the daemon is gone all the same.
        if status_state(&status).is_some_and(|state| matches!(state, 'Z' | 'X')) {
            return Err(io::Error::new(io::ErrorKind::NotFound, format!("{} has exited", dir.display())));
        }
        let stat = std::fs::read_to_string(dir.join("stat"))?;
        let (user_ticks, system_ticks) = parse_stat_cpu(&stat).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, format!("{}/stat has no CPU times", dir.display()))
        })?;
        let fds = if with_fds { std::fs::read_dir(dir.join("fd"))?.count() as u64 } else { 0 };
        Ok(ProcSample {
            rss_bytes: status_kib(&status, "VmRSS:").unwrap_or(0).saturating_mul(1024),
            hwm_bytes: status_kib(&status, "VmHWM:").unwrap_or(0).saturating_mul(1024),
            threads: status_kib(&status, "Threads:").unwrap_or(0),
            user_ticks,
            system_ticks,
            fds,
        })
    }
}

/// CPU seconds (user + system) between two samples.
pub fn cpu_seconds(before: &ProcSample, after: &ProcSample) -> (f64, f64) {
    let ticks_per_second = rustix::param::clock_ticks_per_second().max(1) as f64;
    let user = after.user_ticks.saturating_sub(before.user_ticks) as f64 / ticks_per_second;
    let system = after.system_ticks.saturating_sub(before.system_ticks) as f64 / ticks_per_second;
    (user, system)
}

/// The number on a `/proc/PID/status` line such as `VmRSS:     1636 kB`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix(key))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The state letter of a `/proc/PID/status` `State:` line (`R`, `S`, `Z`, …).
fn status_state(status: &str) -> Option<char> {
    let line = status.lines().find_map(|line| line.strip_prefix("State:"))?;
    line.trim_start().chars().next()
}

/// utime and stime from `/proc/PID/stat`: fields 14 and 15, counted after the command
/// name, which is parenthesised and may itself hold spaces and parentheses.
pub(crate) fn parse_stat_cpu(stat: &str) -> Option<(u64, u64)> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some((user, system))
}

/// Readings of a process over a run.
#[derive(Debug, Clone, Copy)]
pub struct UsageTrace {
    pub before: ProcSample,
    pub last: ProcSample,
    pub peak_rss_bytes: u64,
    pub peak_threads: u64,
    pub peak_fds: u64,
    pub samples: u64,
    /// Samples that failed for a reason of ours (fd limit reached), not the process's.
    pub missed_samples: u64,
    /// The process was gone (it exited) before the run ended.
    pub vanished: bool,
}

impl UsageTrace {
    fn new(before: ProcSample) -> Self {
        Self {
            before,
            last: before,
            peak_rss_bytes: before.rss_bytes,
            peak_threads: before.threads,
            peak_fds: before.fds,
            samples: 1,
            missed_samples: 0,
            vanished: false,
        }
    }

    fn handle_sample(&mut self, sample: io::Result<ProcSample>) {
        let sample = match sample {
            Ok(sample) => sample,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                self.vanished = true;
                return;
            }
            Err(_) => {
                self.missed_samples += 1;
                return;
            }
        };
        self.last = sample;
        self.peak_rss_bytes = self.peak_rss_bytes.max(sample.rss_bytes);
        self.peak_threads = self.peak_threads.max(sample.threads);
        self.peak_fds = self.peak_fds.max(sample.fds);
        self.samples += 1;
    }
}

/// Samples a process on its own thread, so a slow /proc read never delays a stream.
#[derive(Debug)]
pub struct Sampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<UsageTrace>,
}

impl Sampler {
    /// Takes the "before" sample now, then one every `interval` until [`Sampler::finish`].
    pub fn start(process: Process, interval: Duration) -> io::Result<Self> {
        let mut trace = UsageTrace::new(process.sample(true)?);
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("proc-sampler".to_owned()).spawn(move || {
            // Ends on a stop message or when the sender is dropped.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                trace.handle_sample(process.sample(true));
                if trace.vanished {
                    return trace;
                }
            }
            trace.handle_sample(process.sample(true));
            trace
        })?;
        Ok(Self { stop, thread })
    }

    /// Stops sampling after one last sample; `None` if the sampling thread died.
    pub fn finish(self) -> Option<UsageTrace> {
        // A send error means the thread already ended (the process vanished).
        let _ = self.stop.send(());
        self.thread.join().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_times_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (my (odd) daemon) S 1 4242 4242 0 -1 4194560 300 0 0 0 1234 567 0 0 20 0 7 0";
        assert_eq!(parse_stat_cpu(stat), Some((1234, 567)));
    }

    #[test]
    fn truncated_stat_has_no_cpu_times() {
        assert_eq!(parse_stat_cpu("4242 (daemon) S 1 4242"), None);
        assert_eq!(parse_stat_cpu("garbage"), None);
    }

    #[test]
    fn status_values_are_read_by_key() {
        let status = "Name:\tdaemon\nVmHWM:\t    2048 kB\nVmRSS:\t    1636 kB\nThreads:\t5\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(1636));
        assert_eq!(status_kib(status, "VmHWM:"), Some(2048));
        assert_eq!(status_kib(status, "Threads:"), Some(5));
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn zombie_state_is_read_from_status() {
        assert_eq!(status_state("Name:\td\nState:\tZ (zombie)\n"), Some('Z'));
        assert_eq!(status_state("Name:\td\nState:\tS (sleeping)\n"), Some('S'));
        assert_eq!(status_state("Name:\td\n"), None);
    }

    #[test]
    fn a_gone_process_ends_the_trace_but_our_own_read_failures_only_miss_a_sample() {
        let before = ProcSample { rss_bytes: 100, threads: 1, fds: 5, ..ProcSample::default() };
        let mut trace = UsageTrace::new(before);
        trace.handle_sample(Err(io::Error::from_raw_os_error(24))); // EMFILE: ours
        assert_eq!((trace.missed_samples, trace.vanished), (1, false));
        trace.handle_sample(Ok(ProcSample { rss_bytes: 300, threads: 4, fds: 9, ..before }));
        trace.handle_sample(Ok(ProcSample { rss_bytes: 200, threads: 2, fds: 7, ..before }));
        assert_eq!((trace.peak_rss_bytes, trace.peak_threads, trace.peak_fds), (300, 4, 9));
        assert_eq!(trace.last.rss_bytes, 200);
        assert_eq!(trace.samples, 3);
        trace.handle_sample(Err(io::Error::from(io::ErrorKind::NotFound)));
        assert!(trace.vanished);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = Process::Current.sample(true).expect("/proc/self is readable");
        assert!(sample.rss_bytes > 0);
        assert!(sample.hwm_bytes >= sample.rss_bytes);
        assert!(sample.threads >= 1);
        assert!(sample.fds >= 3, "stdin, stdout, stderr at least: {}", sample.fds);
    }
}
