//! The /proc readings the comparison takes besides the load generator's own: a
//! process's CPU time, the machine's CPU time, and the TCP connections open to the
//! backend's port.

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

/// Established TCP connections whose remote port is `port` (IPv4 and IPv6): the
/// daemon's backend connections, since only the daemon connects to mock-llm.
pub fn established_to_port(port: u16) -> io::Result<u64> {
    let mut count = 0;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        match std::fs::read_to_string(table) {
            Ok(text) => count += count_established_to_port(&text, port),
            // No IPv6 in this kernel: nothing to count there.
            Err(error) if error.kind() == io::ErrorKind::NotFound && table.ends_with('6') => {}
            Err(error) => return Err(error),
        }
    }
    Ok(count)
}

/// Rows of a `/proc/net/tcp` table: `sl local_address rem_address st …`, addresses
/// as `HEXADDR:HEXPORT`, state `01` for ESTABLISHED.
fn count_established_to_port(table: &str, port: u16) -> u64 {
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let mut fields = row.split_whitespace().skip(2);
            let remote_port = fields
                .next()
                .and_then(|remote| remote.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            remote_port == Some(port) && fields.next() == Some("01")
        })
        .count() as u64
}

/// Counts the connections to a port on its own thread, keeping the highest count,
/// until [`ConnectionSampler::finish`].
#[derive(Debug)]
pub struct ConnectionSampler {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<Option<u64>>,
}

impl ConnectionSampler {
    pub fn start(port: u16, interval: Duration) -> io::Result<ConnectionSampler> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("tcp-sampler".to_owned()).spawn(move || {
            let mut peak = established_to_port(port).ok();
            // Ends on a stop message or when the sender is dropped.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                if let Ok(count) = established_to_port(port) {
                    peak = Some(peak.map_or(count, |peak| peak.max(count)));
                }
            }
            peak
        })?;
        Ok(ConnectionSampler { stop, thread })
    }

    /// The highest count seen; `None` if no reading succeeded.
    pub fn finish(self) -> Option<u64> {
        let _ = self.stop.send(());
        self.thread.join().ok().flatten()
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

    #[test]
    fn only_established_connections_to_the_port_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
            0: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 0 0 111 1\n\
            1: 0100007F:9C41 0100007F:1F90 06 00000000:00000000 00:00000000 00000000 0 0 0 1\n\
            2: 0100007F:1F90 0100007F:9C40 01 00000000:00000000 00:00000000 00000000 0 0 222 1\n\
            3: 0100007F:9C42 0100007F:1F90 01 00000000:00000000 00:00000000 00000000 0 0 333 1\n\
            4: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 444 1\n";
        // Port 0x1F90 = 8080: rows 0 and 3; row 1 is TIME_WAIT, row 2 the server's side.
        assert_eq!(count_established_to_port(table, 8080), 2);
        assert_eq!(count_established_to_port(table, 40000), 1, "row 2's remote is port 0x9C40");
    }

    #[test]
    fn this_process_has_cpu_time_and_the_machine_a_cpu_line() {
        assert!(process_cpu_seconds(std::process::id()).is_ok());
        assert!(HostCpu::read().is_ok());
        assert!(established_to_port(1).is_ok());
    }
}
