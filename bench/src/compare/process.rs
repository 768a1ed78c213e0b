//! Child processes the comparison starts (daemon, mock-llm, load generator), each
//! stopped by its pid: SIGTERM, then SIGKILL after a bound.
//!
//! Children get a process group of their own, so a ctrl-c at the terminal reaches
//! only us and we stop them in order (generator, daemon, mock-llm). Should we die
//! without stopping them, the kernel sends them SIGTERM (parent-death signal), and
//! dropping a [`Child`] kills it as a last resort.

use std::fmt;
use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use rustix::process::{Pid, Signal};
use tokio::process::Command;

/// A started child.
#[derive(Debug)]
pub struct Child {
    /// What the child is, for messages ("daemon tokio", "mock-llm").
    role: String,
    pid: u32,
    child: tokio::process::Child,
}

/// How a stopped child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// It had exited before we asked.
    Exited(ExitStatus),
    /// It exited after SIGTERM.
    Terminated(ExitStatus),
    /// It ignored SIGTERM for the whole bound and was killed.
    Killed,
    /// Waiting for it failed.
    Lost(String),
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stopped::Exited(status) => write!(f, "exited by itself ({status})"),
            Stopped::Terminated(status) => write!(f, "stopped by SIGTERM ({status})"),
            Stopped::Killed => f.write_str("killed: still running after SIGTERM"),
            Stopped::Lost(error) => write!(f, "lost: {error}"),
        }
    }
}

impl Child {
    /// Starts `command` in a process group of its own, stdin from /dev/null.
    pub fn spawn(role: impl Into<String>, mut command: Command) -> io::Result<Child> {
        command.stdin(std::process::Stdio::null()).process_group(0).kill_on_drop(true);
        // SAFETY: the closure runs between fork and exec and only makes one
        // async-signal-safe system call (prctl); it allocates nothing and takes no lock.
        unsafe {
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(Signal::TERM)).map_err(io::Error::from)
            });
        }
        let role = role.into();
        let child = command.spawn().map_err(|e| io::Error::new(e.kind(), format!("starting {role}: {e}")))?;
        let pid = child.id().ok_or_else(|| io::Error::other(format!("{role} exited at once")))?;
        Ok(Child { role, pid, child })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn role(&self) -> &str {
        &self.role
    }

    /// Its exit status if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for it to exit by itself, up to `bound`.
    pub async fn wait_for(&mut self, bound: Duration) -> Option<io::Result<ExitStatus>> {
        tokio::time::timeout(bound, self.child.wait()).await.ok()
    }

    /// The child's stdout, when it was piped.
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// SIGTERM, up to `bound` for it to exit, then SIGKILL.
    pub async fn stop(mut self, bound: Duration) -> Stopped {
        if let Some(status) = self.exited() {
            return Stopped::Exited(status);
        }
        if let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) {
            // Fails only if it exited meanwhile; the wait below tells.
            let _ = rustix::process::kill_process(pid, Signal::TERM);
        }
        match self.wait_for(bound).await {
            Some(Ok(status)) => Stopped::Terminated(status),
            Some(Err(error)) => Stopped::Lost(error.to_string()),
            None => match self.child.kill().await {
                Ok(()) => Stopped::Killed,
                Err(error) => Stopped::Lost(format!("SIGKILL of {} (pid {}): {error}", self.role, self.pid)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
    }

    #[test]
    fn a_child_that_ignores_sigterm_is_killed_after_the_bound() {
        runtime().block_on(async {
            let mut command = Command::new("sh");
            // An ignored signal stays ignored across exec: `sleep` itself ignores TERM.
            command
                .args(["-c", "trap '' TERM; echo ready; exec sleep 20"])
                .stdout(std::process::Stdio::piped());
            let mut child = Child::spawn("stubborn", command).expect("spawn sh");
            let mut stdout = child.take_stdout().expect("piped stdout");
            let mut ready = [0u8; 6];
            tokio::io::AsyncReadExt::read_exact(&mut stdout, &mut ready).await.expect("ready line");
            assert_eq!(child.stop(Duration::from_millis(200)).await, Stopped::Killed);
        });
    }

    #[test]
    fn a_child_that_honours_sigterm_is_terminated_and_one_that_exited_is_reported_so() {
        runtime().block_on(async {
            let mut command = Command::new("sleep");
            command.arg("20");
            let child = Child::spawn("sleeper", command).expect("spawn sleep");
            assert!(matches!(child.stop(Duration::from_secs(10)).await, Stopped::Terminated(status) if !status.success()));

            let mut done = Child::spawn("true", Command::new("true")).expect("spawn true");
            let status = done.wait_for(Duration::from_secs(10)).await.expect("exits").expect("waits");
            assert!(status.success());
            assert!(matches!(done.stop(Duration::from_secs(1)).await, Stopped::Exited(_)));
        });
    }
}
