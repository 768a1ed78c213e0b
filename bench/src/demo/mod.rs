//! handoff-demo: the daemon, handoff-front and (optionally) mock-llm as child
//! processes, so a browser shows tokens streaming within a minute of cloning.
//!
//! Every child runs in a process group of its own (a terminal's Ctrl-C reaches only
//! us) and is stopped by its pid, in order: front, daemon, mock-llm. Should the demo
//! die without stopping them, the kernel sends them SIGTERM (parent-death signal).

mod binaries;
mod plan;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader, Lines};
use tokio::signal::unix::{signal, SignalKind};

use crate::compare::process::Child;
pub use plan::{Backend, DaemonBackend, Runtime};

/// How long a child may take to print its first line or bind its socket.
const START_BOUND: Duration = Duration::from_secs(15);
/// How long a child may take to exit after SIGTERM before it is killed.
const STOP_BOUND: Duration = Duration::from_secs(5);
/// How often the daemon's socket and the children's exits are checked.
const POLL: Duration = Duration::from_millis(50);

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub runtime: Runtime,
    pub backend: Backend,
    /// Where the front listens (`HOST:PORT`; port 0 picks one).
    pub listen: String,
    /// Where the binaries are (default: next to the demo's own executable).
    pub bin_dir: PathBuf,
    /// Build missing binaries with cargo.
    pub build: bool,
}

/// Runs until SIGINT/SIGTERM or until a child exits; Err says what went wrong.
pub async fn run(config: DemoConfig) -> Result<(), String> {
    let names = plan::binaries(config.runtime, &config.backend);
    if config.build {
        binaries::ensure(&config.bin_dir, &names, config.runtime.binary())?;
    } else if let missing @ [_, ..] = binaries::missing(&config.bin_dir, &names).as_slice() {
        return Err(format!("{} not found in {}", missing.join(", "), config.bin_dir.display()));
    }
    let (mut interrupt, mut terminate) =
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
            (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
            (Err(e), _) | (_, Err(e)) => return Err(format!("could not listen for signals: {e}")),
        };
    let scratch = Scratch::create()?;
    let mut children = Children::default();
    let started = tokio::select! {
        result = start(&config, &scratch.dir, &mut children) => result,
        _ = interrupt.recv() => Err("interrupted while starting".to_owned()),
        _ = terminate.recv() => Err("terminated while starting".to_owned()),
    };
    let outcome = match started {
        Ok(()) => tokio::select! {
            _ = interrupt.recv() => Ok(()),
            _ = terminate.recv() => Ok(()),
            exited = children.first_exit() => Err(exited),
        },
        Err(e) => Err(e),
    };
    eprintln!("handoff-demo: stopping");
    children.stop_all().await;
    drop(scratch);
    outcome
}

async fn start(config: &DemoConfig, dir: &Path, children: &mut Children) -> Result<(), String> {
    let bin = &config.bin_dir;
    let socket = dir.join("handoff.sock");
    let mock_llm = match &config.backend {
        Backend::MockLlm { tokens, token_delay_ms } => {
            let ca = dir.join("mock-llm-ca.pem");
            let mut lines =
                children.spawn("mock-llm", &plan::mock_llm(bin, &ca, *tokens, *token_delay_ms))?;
            let url = first_line(&mut lines, "mock-llm", plan::listening_url).await?;
            let stats =
                first_line(&mut lines, "mock-llm", |line| line.trim().strip_prefix("stats on ")).await?;
            children.drain(lines);
            println!("mock-llm: {url} (HTTP/2 + TLS, CA {}), counters at {stats}", ca.display());
            Some((format!("{url}/v1"), ca))
        }
        _ => None,
    };
    let backend = match (&config.backend, &mock_llm) {
        (Backend::Mock { delay_ms }, _) => DaemonBackend::Mock { delay_ms: *delay_ms },
        (Backend::OpenAi { base }, _) => DaemonBackend::OpenAi { base },
        (Backend::MockLlm { .. }, Some((base, ca))) => DaemonBackend::MockLlm { base, ca },
        (Backend::MockLlm { .. }, None) => return Err("mock-llm did not start".to_owned()),
    };
    let daemon = plan::daemon(bin, config.runtime, &socket, backend);
    children.spawn_quiet(config.runtime.binary(), &daemon)?;
    wait_for_socket(&socket, children).await?;
    println!("daemon: {} on {} ({})", config.runtime.binary(), socket.display(), describe(&config.backend));

    let mut lines = children.spawn("handoff-front", &plan::front(bin, &config.listen, &socket))?;
    let url = first_line(&mut lines, "handoff-front", plan::listening_url).await?;
    children.drain(lines);
    println!("front: handoff-front (a development stand-in for Apache + mod_socket_handoff)");
    println!();
    println!("Open {url} in a browser. Ctrl-C stops everything.");
    Ok(())
}

fn describe(backend: &Backend) -> String {
    match backend {
        Backend::Mock { delay_ms } => format!("built-in mock backend, {delay_ms} ms between events"),
        Backend::OpenAi { base } => format!("OpenAI-compatible API at {base}"),
        Backend::MockLlm { .. } => "mock-llm over HTTP/2 + TLS".to_owned(),
    }
}

/// Reads lines until `pick` finds what it wants in one, within [`START_BOUND`].
async fn first_line<R: AsyncRead + Unpin>(
    lines: &mut Lines<BufReader<R>>,
    role: &str,
    pick: impl Fn(&str) -> Option<&str>,
) -> Result<String, String> {
    let deadline = tokio::time::Instant::now() + START_BOUND;
    loop {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => return Err(format!("{role} printed nothing usable within {START_BOUND:?}")),
            Ok(Err(e)) => return Err(format!("reading {role}'s output: {e}")),
            Ok(Ok(None)) => {
                return Err(format!("{role} exited before it was ready (see its messages above)"))
            }
            Ok(Ok(Some(line))) => {
                if let Some(found) = pick(&line) {
                    return Ok(found.to_owned());
                }
                println!("{line}");
            }
        }
    }
}

/// Waits until the daemon's socket file exists (the front's connects retry the
/// moment between bind and listen, as the module's do).
async fn wait_for_socket(socket: &Path, children: &mut Children) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + START_BOUND;
    loop {
        if let Some(exited) = children.exited() {
            return Err(exited);
        }
        if std::fs::symlink_metadata(socket).is_ok() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!("the daemon did not create {} within {START_BOUND:?}", socket.display()));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The children, in the order they started.
#[derive(Debug, Default)]
struct Children {
    running: Vec<Child>,
}

impl Children {
    /// Starts `launch` with stdout piped (its lines come back), stderr shared.
    fn spawn(
        &mut self,
        role: &str,
        launch: &plan::Launch,
    ) -> Result<Lines<BufReader<tokio::process::ChildStdout>>, String> {
        let mut command = launch.command();
        command.stdout(std::process::Stdio::piped());
        let mut child = Child::spawn(role, command).map_err(|e| e.to_string())?;
        let stdout = child.take_stdout().ok_or_else(|| format!("{role}: no stdout pipe"))?;
        self.running.push(child);
        Ok(BufReader::new(stdout).lines())
    }

    /// Starts `launch` with stdout and stderr shared with ours.
    fn spawn_quiet(&mut self, role: &str, launch: &plan::Launch) -> Result<(), String> {
        let child = Child::spawn(role, launch.command()).map_err(|e| e.to_string())?;
        self.running.push(child);
        Ok(())
    }

    /// Keeps copying a child's remaining stdout lines to ours, so it never blocks on
    /// a full pipe.
    fn drain(&self, mut lines: Lines<BufReader<tokio::process::ChildStdout>>) {
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{line}");
            }
        });
    }

    /// A message naming a child that has exited, if one has.
    fn exited(&mut self) -> Option<String> {
        self.running.iter_mut().find_map(|child| {
            let status = child.exited()?;
            Some(format!("{} (pid {}) exited: {status}", child.role(), child.pid()))
        })
    }

    async fn first_exit(&mut self) -> String {
        loop {
            if let Some(exited) = self.exited() {
                return exited;
            }
            tokio::time::sleep(POLL * 4).await;
        }
    }

    /// Stops the children, the last started first (front, daemon, mock-llm).
    async fn stop_all(&mut self) {
        while let Some(child) = self.running.pop() {
            let (role, pid) = (child.role().to_owned(), child.pid());
            let stopped = child.stop(STOP_BOUND).await;
            eprintln!("handoff-demo: {role} (pid {pid}) {stopped}");
        }
    }
}

/// A private directory for the socket and mock-llm's CA, removed at the end.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn create() -> Result<Scratch, String> {
        let dir = std::env::temp_dir().join(format!("handoff-demo-{}", std::process::id()));
        // A leftover of an earlier demo with our pid is ours to replace.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
