//! The /proc readings the comparison takes besides the load generator's own: a
//! process's CPU time, the machine's CPU time, and the connections mock-llm holds
//! open.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// CPU seconds (user + system) a process has used so far.
pub fn process_cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let ticks = parse_stat_cpu_ticks(&stat).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat has no CPU times"))
    })?;
    Ok(ticks as f64 / ticks_per_second())
}

fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second().max(1) as f64
}

/// utime + stime, in clock ticks (the load generator's parser).
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    crate::load::procfs::parse_stat_cpu(stat).map(|(user, system)| user + system)
}

/// The machine's CPU time so far, from the `cpu` line of `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCpu {
    busy_ticks: u64,
    total_ticks: u64,
}

impl HostCpu {
    pub fn read() -> io::Result<HostCpu> {
        let stat = std::fs::read_to_string("/proc/stat")?;
        parse_host_cpu(&stat)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "/proc/stat has no cpu line"))
    }

    /// The share of all cores that was busy between `earlier` and `self` (0 to 1).
    pub fn busy_since(&self, earlier: &HostCpu) -> Option<f64> {
        let total = self.total_ticks.checked_sub(earlier.total_ticks)?;
        let busy = self.busy_ticks.checked_sub(earlier.busy_ticks)?;
        (total > 0).then(|| busy as f64 / total as f64)
    }
}

/// `cpu  user nice system idle iowait irq softirq steal …`: idle and iowait are not busy.
fn parse_host_cpu(stat: &str) -> Option<HostCpu> {
    let line = stat.lines().find_map(|line| line.strip_prefix("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().take(8).map(|v| v.parse().ok()).collect::<Option<_>>()?;
    if values.len() < 5 {
        return None;
    }
    let total: u64 = values.iter().sum();
    let idle = values.get(3)? + values.get(4)?;
    Some(HostCpu { busy_ticks: total - idle, total_ticks: total })
}

/// Open file descriptors of a process: the entries of `/proc/PID/fd` (one
/// `getdents` walk, cheap next to formatting every socket of the machine as
/// `/proc/net/tcp` does).
pub fn open_fds(pid: u32) -> io::Result<u64> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64)
}

/// The connections mock-llm holds open: its descriptors above those it had when it
/// began listening. mock-llm opens nothing else while it serves (its listener,
/// runtime and log files are open before its first line), and only the daemon
/// connects to it, so every descriptor more is one backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenConnections {
    pid: u32,
    baseline: u64,
    peak: u64,
    samples: u64,
}

impl OpenConnections {
    /// Takes the baseline now: call it after mock-llm listens, before the daemon starts.
    pub fn new(pid: u32) -> io::Result<OpenConnections> {
        Ok(OpenConnections { pid, baseline: open_fds(pid)?, peak: 0, samples: 0 })
    }

    /// Reads the count now, keeps the peak, and returns the count.
    pub fn sample(&mut self) -> io::Result<u64> {
        let open = open_fds(self.pid)?.saturating_sub(self.baseline);
        self.peak = self.peak.max(open);
        self.samples += 1;
        Ok(open)
    }

    /// The most seen at once; `None` before any reading succeeded.
    pub fn peak(&self) -> Option<u64> {
        (self.samples > 0).then_some(self.peak)
    }
}

/// Samples [`OpenConnections`] on its own thread until [`ConnectionSampler::finish`],
/// which takes one last reading.
#[derive(Debug)]
pub struct ConnectionSampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<OpenConnections>,
}

impl ConnectionSampler {
    pub fn start(mut connections: OpenConnections, interval: Duration) -> io::Result<ConnectionSampler> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("conn-sampler".to_owned()).spawn(move || {
            // Ends on a stop message or when the sender is dropped. A failed reading
            // (mock-llm gone) only leaves a gap.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                let _ = connections.sample();
            }
            let _ = connections.sample();
            connections
        })?;
        Ok(ConnectionSampler { stop, thread })
    }

    /// The highest count seen, the last reading included; `None` if none succeeded.
    pub fn finish(self) -> Option<u64> {
        let _ = self.stop.send(());
        self.thread.join().ok().and_then(|connections| connections.peak())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (mock (llm) x) S 1 4242 4242 0 -1 4194560 300 0 0 0 1234 567 0 0 20 0 7 0";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(1801));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1"), None);
    }

    #[test]
    fn host_busy_share_leaves_out_idle_and_iowait() {
        let before = parse_host_cpu("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n").expect("cpu line");
        let after = parse_host_cpu("cpu  250 0 150 950 150 0 0 0 0 0\n").expect("cpu line");
        // busy +200, idle + iowait +300.
        assert_eq!(after.busy_since(&before), Some(0.4));
        assert_eq!(before.busy_since(&after), None, "counters never run backwards");
        assert_eq!(parse_host_cpu("intr 1 2 3\n"), None);
    }

    /// A shell that opens two descriptors, then closes them, one step per line of
    /// input, saying when each step is done.
    struct Stepper {
        child: std::process::Child,
        input: std::process::ChildStdin,
        output: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
    }

    impl Stepper {
        fn start() -> Stepper {
            use std::process::{Command, Stdio};
            let script = "echo ready; read x; exec 3</dev/null 4</dev/null; echo opened; \
                          read x; exec 3<&- 4<&-; echo closed; read x";
            let mut child = Command::new("sh")
                .args(["-c", script])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn sh");
            let input = child.stdin.take().expect("piped stdin");
            let output =
                std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().expect("piped")));
            let mut stepper = Stepper { child, input, output };
            stepper.expect("ready");
            stepper
        }

        fn expect(&mut self, word: &str) {
            let line = self.output.next().expect("a line").expect("readable");
            assert_eq!(line, word);
        }

        fn step(&mut self, word: &str) {
            std::io::Write::write_all(&mut self.input, b"go\n").expect("write");
            self.expect(word);
        }
    }

    impl Drop for Stepper {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[test]
    fn descriptors_above_the_baseline_are_open_connections_and_the_peak_stays() {
        let mut shell = Stepper::start();
        let mut connections = OpenConnections::new(shell.child.id()).expect("baseline");
        assert_eq!(connections.peak(), None);
        assert_eq!(connections.sample().expect("reading"), 0);
        shell.step("opened");
        assert_eq!(connections.sample().expect("reading"), 2);
        shell.step("closed");
        assert_eq!(connections.sample().expect("reading"), 0);
        assert_eq!(connections.peak(), Some(2), "the peak outlives the connections");
    }

    #[test]
    fn the_sampler_takes_a_last_reading_when_it_finishes() {
        let mut shell = Stepper::start();
        let connections = OpenConnections::new(shell.child.id()).expect("baseline");
        // An interval far longer than the test: only the final reading can see them.
        let sampler = ConnectionSampler::start(connections, Duration::from_secs(3600)).expect("thread");
        shell.step("opened");
        assert_eq!(sampler.finish(), Some(2));
        assert!(OpenConnections::new(u32::MAX).is_err(), "no such process");
    }

    #[test]
    fn this_process_has_cpu_time_and_the_machine_a_cpu_line() {
        assert!(process_cpu_seconds(std::process::id()).is_ok());
        assert!(HostCpu::read().is_ok());
    }
}
