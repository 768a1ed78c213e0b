//! handoff-smol: the handoff daemon on smol (async-io reactor, async-executor).

mod runtime;
mod timer_queue;

use std::process::ExitCode;
use std::sync::Arc;

use handoff_io::daemon::{self, DaemonError};
use handoff_io::entry;

fn main() -> ExitCode {
    entry::main("handoff-smol", |config| {
        let threads = entry::thread_count(&config);
        let executor = Arc::new(smol::Executor::new());
        let runtime = runtime::SmolRuntime::new(executor.clone());
        let (stop_workers, workers_stopped) = smol::channel::unbounded::<()>();
        // The calling thread is executor thread one; the rest are spawned here.
        let mut workers = Vec::new();
        for index in 1..threads {
            let executor = executor.clone();
            let stopped = workers_stopped.clone();
            let worker = std::thread::Builder::new()
                .name(format!("handoff-smol-{index}"))
                .spawn(move || async_io::block_on(executor.run(stopped.recv())))
                .map_err(|e| DaemonError::Io("starting an executor thread", e))?;
            workers.push(worker);
        }
        let result = async_io::block_on(executor.run(async {
            let shutdown =
                runtime::shutdown_signal().map_err(|e| DaemonError::Io("installing signal handlers", e))?;
            daemon::run(runtime, config, shutdown).await
        }));
        drop(stop_workers);
        for worker in workers {
            let _ = worker.join();
        }
        result
    })
}
