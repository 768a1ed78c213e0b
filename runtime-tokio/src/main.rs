//! handoff-tokio: the handoff daemon on tokio. Each worker is a current-thread
//! runtime on its own thread: it accepts its own handoffs and owns its streams,
//! timers and backend connections, so no wake-up crosses a thread.

use std::process::ExitCode;

use handoff_io::daemon::{self, DaemonError};
use handoff_io::entry;
use handoff_tokio::runtime;

fn main() -> ExitCode {
    entry::main("handoff-tokio", |config| {
        let threads = entry::thread_count(&config);
        entry::serve_workers("handoff-tokio", config, threads, |plan, stop| {
            let tokio = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| DaemonError::Io("starting the tokio runtime", e))?;
            tokio.block_on(async {
                let shutdown = stop.shutdown(runtime::shutdown_signal)?;
                daemon::run_worker(runtime::TokioRuntime::current(), plan, shutdown).await
            })
        })
    })
}
