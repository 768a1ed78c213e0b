//! handoff-smol: the handoff daemon on smol's executor, with a reactor per
//! worker thread (`reactor`) in place of async-io's process-global one, so the
//! workers are shared-nothing: each worker is an executor run by one thread only,
//! with its own epoll and timers; it accepts its own handoffs and owns its
//! streams, timers and backend connections, so no task or event moves between
//! threads.

mod reactor;
mod runtime;

use std::process::ExitCode;
use std::sync::Arc;

use handoff_io::daemon::{self, DaemonError};
use handoff_io::entry;

fn main() -> ExitCode {
    entry::main("handoff-smol", |config| {
        let threads = entry::thread_count(&config);
        entry::serve_workers("handoff-smol", config, threads, |plan, stop| {
            let executor = Arc::new(smol::Executor::new());
            let runtime = runtime::SmolRuntime::new(executor.clone());
            reactor::block_on(executor.run(async {
                let shutdown = stop.shutdown(runtime::shutdown_signal)?;
                daemon::run_worker(runtime, plan, shutdown).await
            }))
            .map_err(|error| DaemonError::Io("running the worker's reactor", error))?
        })
    })
}
